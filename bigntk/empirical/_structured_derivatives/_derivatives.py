"""Structured derivatives of one side (x1 or x2): ``df/dy`` and ``dy/dw`` for every use of ``w``.

For each parameter leaf ``w``, the Jacobian is split over the equations that
consume ``w``'s tangent:

    ∂f/∂w = Σ_uses ∂f/∂y_use · ∂y_use/∂w,

with ``∂y/∂w`` a :class:`Factor` from a structure rule (or a dense fallback),
and ``∂f/∂y`` read off one batched backward pass: the linearised function is
re-evaluated with a perturbation added at every ``y`` (and, for uses pulled
back, at ``w``'s input to the equation), and transposed over the standard
basis of the outputs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bigntk.empirical._structured_derivatives import _compat
from bigntk.empirical._structured_derivatives._factor import Factor, compose, identity
from bigntk.empirical._structured_derivatives._graph import (
    Const,
    Eqn,
    Graph,
    evaluate,
    linear_graph,
    zeros,
)
from bigntk.empirical._structured_derivatives._rules import apply_rule, is_real
from bigntk.empirical._structured_derivatives._site import PULLBACK


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Use:
    """One term ``df/dy[key] · factor`` of ``∂f/∂w``."""

    key: str = dataclasses.field(metadata=dict(static=True))
    factor: Factor


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Derivatives:
    """Everything one side contributes to the NTK.

    Attributes:
        df: ``df[key][o]``: derivative of output leaf ``o`` in the perturbation
            ``key``, shape ``(*out_o, *y)``.
        uses: for each parameter leaf, its terms.
        fallbacks: primitives that had no structure rule.
    """

    df: dict[str, list]
    uses: list[list[Use]]
    fallbacks: tuple[str, ...] = dataclasses.field(metadata=dict(static=True))


def _y_key(k: int, j: int) -> str:
    return f"y{k}.{j}"


def _w_key(i: int) -> str:
    return f"w{i}"


def _push_forward(graph: Graph, k: int, factor: Factor, results: set) -> tuple[int, Factor]:
    """Move a use downstream while its output only feeds one cheap or shrinking equation."""
    while True:
        y = graph.eqns[k].outs[0]
        if y in results or len(graph.consumers[y]) != 1 or len(graph.eqns[k].outs) != 1:
            return k, factor
        k2, pos = graph.consumers[y][0]
        nxt = graph.eqns[k2]
        then = apply_rule(graph, nxt, pos)
        if not isinstance(then, Factor):
            return k, factor
        n1, n2 = graph.size(y), graph.size(nxt.outs[0])
        if not (n2 < n1 or (n2 == n1 and then.is_cheap)):
            return k, factor
        factor, k = compose(factor, then), k2


def _dense(graph: Graph, k: int, pos: int, j: int) -> Factor:
    """``∂y_j/∂w`` of equation ``k`` materialised, by JVPs or VJPs, whichever is fewer."""
    eqn = graph.eqns[k]
    w_aval, y_aval = graph.avals[eqn.ins[pos]], graph.avals[eqn.outs[j]]
    nw, ny = math.prod(w_aval.shape), math.prod(y_aval.shape)

    def h(t: Any) -> Any:
        args = [
            t if p == pos else a.value if isinstance(a, Const) else zeros(graph.avals[a])
            for p, a in enumerate(eqn.ins)
        ]
        return _compat.bind(eqn.primitive, eqn.params, args)[j]

    ws, ys = w_aval.shape, y_aval.shape
    y_labels = tuple(range(len(ys)))
    w_labels = tuple(range(len(ys), len(ys) + len(ws)))
    if nw <= ny and eqn.name not in _compat.TRANSPOSE_ONLY:
        basis = jnp.eye(nw, dtype=w_aval.dtype).reshape(nw, *ws)
        d = jax.vmap(h)(basis).reshape(*ws, *ys)
        labels = w_labels + y_labels
    else:
        hT = jax.linear_transpose(h, w_aval)
        basis = jnp.eye(ny, dtype=y_aval.dtype).reshape(ny, *ys)
        d = jax.vmap(lambda c: hT(c)[0])(basis).reshape(*ys, *ws)
        labels = y_labels + w_labels
    return Factor.make([(d, labels)], y_labels, w_labels, ys, ws)


def _dense_is_smaller(graph: Graph, eqn: Eqn, w: int, out_size: int) -> bool:
    """Whether a dense ``dy/dw`` (``|y|·|w|``) beats pulling back to ``df/dw`` (``|out|·|w|``).

    Complex values are always pulled back.
    """
    avals = [graph.avals[y] for y in eqn.outs]
    complex_ = [a for a in (*avals, graph.avals[w]) if jnp.issubdtype(a.dtype, jnp.complexfloating)]
    if complex_:
        return False
    return sum(math.prod(a.shape) for a in avals if is_real(a.dtype)) < out_size


@dataclasses.dataclass
class _Plan:
    uses: list[list[Use]]
    at_inputs: dict[tuple[int, int], str]
    at_outputs: dict[tuple[int, int], str]
    at_results: dict[int, str]
    fallbacks: list[str]


def _plan(graph: Graph, out_size: int) -> _Plan:
    """Choose, for every use of every parameter, a factor or a pull-back."""
    plan = _Plan([], {}, {}, {}, [])
    results = {a for a in graph.outs if isinstance(a, int)}
    for i, v in enumerate(graph.params):
        uses: list[Use] = []
        pull = False
        for k, pos in graph.consumers[v]:
            eqn = graph.eqns[k]
            got = apply_rule(graph, eqn, pos)
            if got is None:
                if eqn.name not in plan.fallbacks:
                    plan.fallbacks.append(eqn.name)
                if _dense_is_smaller(graph, eqn, v, out_size):
                    for j, y in enumerate(eqn.outs):
                        if is_real(graph.avals[y].dtype):  # others are integer: zero
                            plan.at_outputs[(k, j)] = _y_key(k, j)
                            uses.append(Use(_y_key(k, j), _dense(graph, k, pos, j)))
                    continue
                got = PULLBACK
            if got is PULLBACK:
                plan.at_inputs[(k, pos)] = _w_key(i)
                pull = True
            else:
                k2, factor = _push_forward(graph, k, got, results)
                plan.at_outputs[(k2, 0)] = _y_key(k2, 0)
                uses.append(Use(_y_key(k2, 0), factor))
        for o, a in enumerate(graph.outs):
            if a == v:
                plan.at_results[o] = _w_key(i)
                pull = True
        if pull:
            uses.append(Use(_w_key(i), identity(graph.avals[v].shape)))
        plan.uses.append(uses)
    return plan


def _key_avals(graph: Graph, plan: _Plan) -> dict[str, jax.ShapeDtypeStruct]:
    avals = {}
    for (k, j), key in plan.at_outputs.items():
        avals[key] = graph.avals[graph.eqns[k].outs[j]]
    for (k, pos), key in plan.at_inputs.items():
        avals[key] = graph.avals[graph.eqns[k].ins[pos]]
    for key in plan.at_results.values():
        avals[key] = graph.avals[graph.params[int(key[1:])]]
    return avals


def _backward(graph: Graph, plan: _Plan, outs: list) -> dict[str, list]:
    """``df[key][o]`` for every perturbation ``key``: one batched transpose per output leaf."""
    avals = _key_avals(graph, plan)
    keys = sorted(avals)
    if not keys:
        return {}

    # integer outputs have float0 tangents: their derivatives are zero
    real = [o for o, out in enumerate(outs) if jnp.issubdtype(out.dtype, jnp.inexact)]

    def g(*perts: Any) -> list:
        at = dict(zip(keys, perts, strict=True))
        results = evaluate(
            graph,
            {site: at[key] for site, key in plan.at_inputs.items()},
            {site: at[key] for site, key in plan.at_outputs.items()},
            {o: at[key] for o, key in plan.at_results.items()},
        )
        return [results[o] for o in real]

    primals = [avals[key] for key in keys]
    out_avals = jax.eval_shape(g, *primals)
    gT = jax.linear_transpose(g, *primals)
    df: dict[str, list] = {key: [None] * len(outs) for key in keys}
    for i, (o, out) in enumerate(zip(real, out_avals, strict=True)):
        n = math.prod(out.shape)
        if n == 0:
            continue

        def column(m: Any, i: int = i, out: Any = out) -> Any:
            cts = [zeros(a) for a in out_avals]
            hot = (jnp.arange(math.prod(out.shape)) == m).astype(out.dtype)
            cts[i] = hot.reshape(out.shape)
            return gT(cts)

        cols = jax.vmap(column)(jnp.arange(n))
        for key, col in zip(keys, cols, strict=True):
            df[key][o] = col.reshape(*out.shape, *avals[key].shape)
    for key, cols in df.items():  # integer or empty outputs
        for o, col in enumerate(cols):
            if col is None:
                shape = (*np.shape(outs[o]), *avals[key].shape)
                cols[o] = jnp.zeros(shape, avals[key].dtype)
    return df


def derivatives(g: Callable[[list], list], diff: list) -> Derivatives:
    """Structured derivatives of ``g`` (parameter leaves -> output leaves) at ``diff``."""
    outs, graph = linear_graph(g, diff)
    out_size = sum(int(np.size(o)) for o in outs)
    plan = _plan(graph, out_size)
    return Derivatives(_backward(graph, plan, outs), plan.uses, tuple(plan.fallbacks))
