"""Inferring ``vmap_axes=0`` when the caller gave none, by a proof on ``f``'s program.

With ``vmap_axes`` every implementation works per example (an ``N``-row NTK
costs ``N`` per-example derivatives, not ``N`` derivatives of the whole batch),
but Neural Tangents' users often leave it at None. For such a call bigntk
traces the JVP of ``f`` in its parameters (``make_jaxpr``; nothing runs) and
uses ``vmap_axes=0`` only when two facts are proved for the call's shapes:

1. *Locality*: slice ``i`` (axis 0) of every output and output tangent depends
   on the inputs only through slice ``i`` of every input leaf. A batch axis is
   carried through each equation by a rule per primitive; a primitive without a
   rule, a reduction, contraction, slice or window over the batch axis, or a
   value that does not depend on ``x`` but varies along the batch axis
   (``arange(N)``), combined with a batched one, ends the proof.
2. *Size independence*: the program for a batch of one is the same program
   with ``N`` replaced by 1 (primitives, parameters, literals, constants), so
   one example through ``f`` computes exactly its slice of the batch (this
   catches ``x.shape[0]`` used as a number).

Anything unproved keeps ``vmap_axes=None``: slower, never different.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import jax
import numpy as np

from bigntk.empirical._trees import SplitParams, is_array

logger = logging.getLogger(__name__)


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ELEMENTWISE = _names(
    "abs acos acosh add add_any and asin asinh atan atan2 atanh cbrt ceil clamp conj "
    "convert_element_type copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 "
    "expm1 floor ge gt imag integer_pow is_finite le lgamma log log1p logistic lt max min "
    "mul ne neg nextafter not or pow real reduce_precision rem round rsqrt select_n "
    "shift_left shift_right_arithmetic shift_right_logical sign sin sinh sqrt square "
    "stop_gradient sub tan tanh xor population_count clz"
)
_REDUCTIONS = _names(
    "reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or reduce_xor argmax argmin"
)
_CUMULATIVE = _names("cumsum cumprod cummax cummin cumlogsumexp")
_WINDOWS = _names("reduce_window_sum reduce_window_max reduce_window_min")
#: parameters holding custom derivative rules (not compared: the JVP traced them)
_RULE_PARAMS = _names("jvp jvp_jaxpr_fun jvp_jaxpr_thunk fwd_jaxpr_thunk bwd out_trees")
_NUMERIC = (np.ndarray, np.generic, jax.Array, float, complex)
#: primitives that call a sub-program on their operands one to one
_CALLS = _names(
    "pjit jit closed_call core_call custom_jvp_call custom_vjp_call checkpoint remat remat2"
)


class _NoProof(Exception):
    """The batch axis could not be followed; the message says where."""


class _Tag(NamedTuple):
    """What is known of one value: its batch axis, or the axes it is constant along."""

    axis: int | None  # None: does not depend on the batched inputs
    const: frozenset = frozenset()  # for unbatched values: axes along which it is constant


def _constant_axes(shape: tuple, const: frozenset) -> frozenset:
    return const | {d for d, n in enumerate(shape) if n == 1}


def _shape(v: Any) -> tuple:
    return tuple(getattr(v.aval, "shape", ()))


class _Walk:
    """Batch tags through one jaxpr (see the module docstring)."""

    def run(self, jaxpr: Any, in_tags: list[_Tag]) -> list[_Tag]:
        env: dict[Any, _Tag] = {v: _Tag(None) for v in jaxpr.constvars}
        env.update(zip(jaxpr.invars, in_tags, strict=True))

        def read(v: Any) -> _Tag:
            if isinstance(v, jax.extend.core.Literal):
                return _Tag(None, frozenset(range(len(_shape(v)))))
            return env[v]

        for eqn in jaxpr.eqns:
            tags = [read(v) for v in eqn.invars]
            if all(t.axis is None for t in tags):
                outs = self._unbatched(eqn, tags)
            else:
                outs = self._batched(eqn, tags)
            env.update(zip(eqn.outvars, outs, strict=True))
        return [read(v) for v in jaxpr.outvars]

    # -- values independent of x: only which axes they are constant along matters ----------

    def _unbatched(self, eqn: Any, tags: list[_Tag]) -> list[_Tag]:
        name, p = eqn.primitive.name, eqn.params
        out_shape = _shape(eqn.outvars[0])
        const: frozenset = frozenset()
        if name in _ELEMENTWISE:
            sets = [
                _constant_axes(_shape(v), t.const)
                for v, t in zip(eqn.invars, tags, strict=True)
                if _shape(v)
            ]
            const = frozenset.intersection(*sets) if sets else frozenset(range(len(out_shape)))
        elif name == "broadcast_in_dim":
            dims = p["broadcast_dimensions"]
            kept = _constant_axes(_shape(eqn.invars[0]), tags[0].const)
            const = frozenset(d for d in range(len(out_shape)) if d not in dims) | {
                dims[k] for k in kept
            }
        elif name == "iota":
            const = frozenset(range(len(out_shape))) - {p["dimension"]}
        elif name == "transpose":
            perm = p["permutation"]
            const = frozenset(perm.index(d) for d in tags[0].const)
        return [_Tag(None, _constant_axes(_shape(v), const)) for v in eqn.outvars]

    # -- values that depend on x --------------------------------------------------------------

    def _batched(self, eqn: Any, tags: list[_Tag]) -> list[_Tag]:
        name, p = eqn.primitive.name, eqn.params
        shapes = [_shape(v) for v in eqn.invars]
        axes = {t.axis for t in tags if t.axis is not None}
        if name in _CALLS:
            return self._call(eqn, tags)
        if name in _ELEMENTWISE or name == "concatenate":
            if len(axes) != 1:
                raise _NoProof(f"{name}: operands batched along different axes {sorted(axes)}")
            (a,) = axes
            if name == "concatenate" and p["dimension"] == a:
                raise _NoProof("concatenate along the batch axis")
            for s, t in zip(shapes, tags, strict=True):
                if t.axis is None and s and a not in _constant_axes(s, t.const):
                    raise _NoProof(f"{name}: an operand independent of x varies along the batch")
            return [_Tag(a) for _ in eqn.outvars]
        if len(axes) != 1:
            raise _NoProof(f"{name}: several batched operands")
        (a,) = axes
        rule = getattr(self, f"_rule_{name}", None)
        if rule is not None:
            return rule(eqn, tags, shapes, a)
        if name in _REDUCTIONS:
            if a in p["axes"]:
                raise _NoProof(f"{name} over the batch axis")
            return [_Tag(a - sum(d < a for d in p["axes"]))]
        if name in _CUMULATIVE:
            if p["axis"] == a:
                raise _NoProof(f"{name} along the batch axis")
            return [_Tag(a)]
        if name in _WINDOWS:
            ok = p["window_dimensions"][a] == 1 and p["window_strides"][a] == 1
            ok = ok and tuple(p["padding"][a]) == (0, 0)
            ok = ok and p["base_dilation"][a] == 1 and p["window_dilation"][a] == 1
            if not ok:
                raise _NoProof(f"{name}: a window across the batch axis")
            return [_Tag(a)]
        raise _NoProof(f"no rule for {name}")

    def _call(self, eqn: Any, tags: list[_Tag]) -> list[_Tag]:
        inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        if inner is None:
            raise _NoProof(f"{eqn.primitive.name} without a sub-program")
        return self.run(getattr(inner, "jaxpr", inner), tags)

    def _rule_broadcast_in_dim(self, eqn, tags, shapes, a):
        dims, shape = eqn.params["broadcast_dimensions"], eqn.params["shape"]
        if shape[dims[a]] != shapes[0][a]:
            raise _NoProof("broadcast_in_dim stretches the batch axis")
        return [_Tag(dims[a])]

    def _rule_reshape(self, eqn, tags, shapes, a):
        old, new = shapes[0], tuple(eqn.params["new_sizes"])
        if eqn.params.get("dimensions") is not None:
            raise _NoProof("reshape with a dimension order")
        before, after = math.prod(old[:a]), math.prod(old[a + 1 :])
        for b in range(len(new)):
            if (math.prod(new[:b]), new[b], math.prod(new[b + 1 :])) == (before, old[a], after):
                return [_Tag(b)]
        raise _NoProof(f"reshape {old} -> {new} merges or splits the batch axis")

    def _rule_transpose(self, eqn, tags, shapes, a):
        return [_Tag(tuple(eqn.params["permutation"]).index(a))]

    def _rule_squeeze(self, eqn, tags, shapes, a):
        dims = eqn.params["dimensions"]
        if a in dims:
            raise _NoProof("squeeze of the batch axis")
        return [_Tag(a - sum(d < a for d in dims))]

    def _rule_rev(self, eqn, tags, shapes, a):
        if a in eqn.params["dimensions"]:
            raise _NoProof("rev along the batch axis")
        return [_Tag(a)]

    def _rule_slice(self, eqn, tags, shapes, a):
        p = eqn.params
        strides = p["strides"] or (1,) * len(shapes[0])
        if (p["start_indices"][a], p["limit_indices"][a], strides[a]) != (0, shapes[0][a], 1):
            raise _NoProof("slice along the batch axis")
        return [_Tag(a)]

    def _rule_pad(self, eqn, tags, shapes, a):
        if tags[1].axis is not None or tuple(eqn.params["padding_config"][a]) != (0, 0, 0):
            raise _NoProof("pad along the batch axis, or with a batched value")
        return [_Tag(a)]

    def _rule_split(self, eqn, tags, shapes, a):
        if eqn.params["axis"] == a:
            raise _NoProof("split along the batch axis")
        return [_Tag(a) for _ in eqn.outvars]

    def _rule_sort(self, eqn, tags, shapes, a):
        if eqn.params["dimension"] == a:
            raise _NoProof("sort along the batch axis")
        for s, t in zip(shapes, tags, strict=True):
            if t.axis != a and (t.axis is not None or a not in _constant_axes(s, t.const)):
                raise _NoProof("sort: operands batched differently")
        return [_Tag(a) for _ in eqn.outvars]

    def _rule_dot_general(self, eqn, tags, shapes, a):
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        (tl, tr), (sl, sr) = tags, shapes
        free_l = [d for d in range(len(sl)) if d not in lc and d not in lb]
        free_r = [d for d in range(len(sr)) if d not in rc and d not in rb]
        if tl.axis is not None and tr.axis is not None:
            if tl.axis in lb and tr.axis in rb and lb.index(tl.axis) == rb.index(tr.axis):
                return [_Tag(lb.index(tl.axis))]
            raise _NoProof("dot_general of two batched operands across examples")
        if tl.axis is not None:
            if tl.axis not in free_l:
                raise _NoProof("dot_general contracts the batch axis")
            return [_Tag(len(lb) + free_l.index(tl.axis))]
        if tr.axis not in free_r:
            raise _NoProof("dot_general contracts the batch axis")
        return [_Tag(len(lb) + len(free_l) + free_r.index(tr.axis))]

    def _rule_conv_general_dilated(self, eqn, tags, shapes, a):
        p = eqn.params
        lhs_spec, _, out_spec = p["dimension_numbers"]
        if tags[1].axis is not None or a != lhs_spec[0] or p["batch_group_count"] != 1:
            raise _NoProof("conv_general_dilated: batched kernel or batch groups")
        return [_Tag(out_spec[0])]

    def _rule_gather(self, eqn, tags, shapes, a):
        dn = eqn.params["dimension_numbers"]
        if tags[0].axis is not None or getattr(dn, "operand_batching_dims", ()):
            raise _NoProof("gather from a batched operand")
        if a == len(shapes[1]) - 1:
            raise _NoProof("gather: batch axis is the index vector")
        out_ndim = len(_shape(eqn.outvars[0]))
        batch_dims = [d for d in range(out_ndim) if d not in dn.offset_dims]
        return [_Tag(batch_dims[a])]


def _same_program(ja: Any, jb: Any, n: int) -> None:
    """Raises :class:`_NoProof` unless ``jb`` is ``ja`` with batch size ``n`` replaced by 1."""
    if not _same_value(getattr(ja, "consts", []), getattr(jb, "consts", []), n):
        raise _NoProof("a constant changes with the batch size")
    ja, jb = getattr(ja, "jaxpr", ja), getattr(jb, "jaxpr", jb)
    if (len(ja.eqns), len(ja.invars), len(ja.constvars), len(ja.outvars)) != (
        len(jb.eqns),
        len(jb.invars),
        len(jb.constvars),
        len(jb.outvars),
    ):
        raise _NoProof("the program changes with the batch size")
    # the same wiring: each value of ja corresponds to the value of jb defined in its place
    twin = dict(zip([*ja.constvars, *ja.invars], [*jb.constvars, *jb.invars], strict=True))

    def wired(va: Any, vb: Any) -> bool:
        literal = isinstance(va, jax.extend.core.Literal)
        if literal != isinstance(vb, jax.extend.core.Literal):
            return False
        return _same_value(va.val, vb.val, n) if literal else twin.get(va) is vb

    for ea, eb in zip(ja.eqns, jb.eqns, strict=True):
        if ea.primitive != eb.primitive or set(ea.params) != set(eb.params):
            raise _NoProof(f"{ea.primitive.name} changes with the batch size")
        for k in ea.params:
            if k in _RULE_PARAMS:
                continue  # custom derivative rules: their effect is in the traced JVP itself
            if not _same_value(ea.params[k], eb.params[k], n):
                raise _NoProof(f"{ea.primitive.name}'s {k} changes with the batch size")
        if len(ea.invars) != len(eb.invars) or not all(map(wired, ea.invars, eb.invars)):
            raise _NoProof(
                f"{ea.primitive.name}: an operand or literal changes with the batch size"
            )
        twin.update(zip(ea.outvars, eb.outvars, strict=True))
    if not all(map(wired, ja.outvars, jb.outvars)):
        raise _NoProof("the outputs change with the batch size")


def _same_value(a: Any, b: Any, n: int) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b or (a == n and b == 1)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same_value(x, y, n) for x, y in zip(a, b, strict=True))
    if hasattr(a, "eqns") or hasattr(getattr(a, "jaxpr", None), "eqns"):
        try:
            _same_program(a, b, n)
        except _NoProof:
            return False
        return True
    if isinstance(a, jax.core.Tracer) or isinstance(b, jax.core.Tracer):
        return a is b
    if isinstance(a, _NUMERIC) or isinstance(b, _NUMERIC):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable parameters: not the same
        return False


def _jvp_program(f: Any, sp: SplitParams, x: Any, kw: dict) -> Any:
    def jvp(diff, tangents, x):
        return jax.jvp(lambda d: f(sp.rebuild(d), x, **kw), (diff,), (tangents,))

    return jax.make_jaxpr(jvp)(sp.diff, sp.diff, x)


def _prove(f: Any, sp: SplitParams, x: Any, kw: dict) -> None:
    leaves = jax.tree.leaves(x)
    n = leaves[0].shape[0]
    if n == 1:
        return  # one example: trivially its own batch
    program = _jvp_program(f, sp, x, kw)
    one = jax.tree.map(lambda v: jax.ShapeDtypeStruct((1, *v.shape[1:]), v.dtype), x)
    _same_program(program, _jvp_program(f, sp, one, kw), n)
    consts = len(program.jaxpr.invars) - len(leaves)
    tags = [_Tag(None)] * consts + [_Tag(0)] * len(leaves)
    for t, v in zip(_Walk().run(program.jaxpr, tags), program.jaxpr.outvars, strict=True):
        if t.axis != 0 or _shape(v)[:1] != (n,):
            raise _NoProof("an output is not batched along axis 0")


def why_not_batch_independent(f: Any, x1: Any, x2: Any, params: Any, kw1: dict,
                              kw2: dict) -> str | None:  # fmt: skip
    """None when ``vmap_axes=0`` is proved to give the same kernels for this call, else why not."""
    sides = [(x1, kw1)] if x2 is x1 and kw1 is kw2 else [(x1, kw1), (x2, kw2)]
    for x, kw in sides:
        leaves = jax.tree.leaves(x)
        if not leaves or not all(is_array(v) and np.ndim(v) >= 1 for v in leaves):
            return "the inputs are not arrays with a batch axis"
        if len({np.shape(v)[0] for v in leaves}) != 1:
            return "the input leaves have different batch sizes"
        if any(is_array(v) for v in jax.tree.leaves(kw)):
            return "keyword arguments hold arrays, whose batch axes are unknown"
    if all(np.shape(jax.tree.leaves(x)[0])[0] == 1 for x, _ in sides):
        return "one example per side: nothing to prove"
    sp = SplitParams(params)
    if not sp.diff:
        return "f has no differentiable parameters"
    try:
        for x, kw in sides:
            _prove(f, sp, x, kw)
    except _NoProof as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - the proof is an optimisation, never an error
        return f"tracing f for the proof failed ({e!r})"
    return None


def infer_vmap_axes(f: Any, x1: Any, x2: Any, params: Any, kw1: dict, kw2: dict) -> int | None:
    """0 when ``vmap_axes=0`` is proved to give the same kernels for this call, else None."""
    reason = why_not_batch_independent(f, x1, x2, params, kw1, kw2)
    if reason is not None:
        logger.debug("vmap_axes stays None: %s", reason)
        return None
    logger.debug("vmap_axes=None: proved batch-independent; computing with vmap_axes=0")
    return 0
