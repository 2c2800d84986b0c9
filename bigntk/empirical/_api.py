"""The front door: ``empirical_kernel_fn`` and friends, with Neural Tangents' API.

Argument checking, the ``get`` convention, kwargs splitting, output shapes and
dtypes are handled here once; the implementations only compute.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from bigntk.empirical._axes import axes_spec, check_sizes
from bigntk.empirical._batch import infer_vmap_axes
from bigntk.empirical._chunking import (
    Chunks,
    chunked,
)
from bigntk.empirical._implementation import (
    DEFAULT_NTK_IMPLEMENTATION,
    NtkImplementation,
    as_implementation,
    get_implementation,
)
from bigntk.empirical._kwargs import split_kwargs
from bigntk.empirical._nngp import nngp as _nngp
from bigntk.empirical._planning import (
    Compiled,
    KernelPlan,
    Planner,
    ProblemInfo,
    check_budget,
    problem_info,
    shapes_only,
)
from bigntk.empirical._problem import Problem
from bigntk.empirical._trees import SplitParams
from bigntk.empirical._vmap import canonical_vmap_axes, out_axes_per_leaf

logger = logging.getLogger(__name__)

KINDS = ("nngp", "ntk")
EmpiricalKernel = collections.namedtuple("EmpiricalKernel", KINDS)


def _canonical_get(get: None | str | Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """``(kinds, single)``: the kernels to compute, and whether to return one array."""
    if get is None:
        return KINDS, False
    if isinstance(get, str):
        names, single = (get,), True
    elif isinstance(get, Sequence):
        names, single = tuple(get), False
    else:
        raise TypeError(
            f"get must be None, 'nngp', 'ntk', or a tuple of them, got {get!r} instead."
        )
    kinds = tuple(n.lower() if isinstance(n, str) else n for n in names)
    bad = [n for n in kinds if n not in KINDS]
    if bad or not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(
            f"get must be None, 'nngp', 'ntk', or a non-empty tuple of distinct ones, "
            f"got {get!r} instead."
        )
    return kinds, single


def _check_axes_arg(axes: Any, name: str) -> None:
    def is_int(a: Any) -> bool:
        return isinstance(a, int) and not isinstance(a, bool)

    if is_int(axes) or (
        isinstance(axes, Sequence) and not isinstance(axes, str) and all(map(is_int, axes))
    ):
        return
    raise TypeError(f"{name} must be an int or a sequence of ints, got {axes!r} instead.")


def _x2_or_none(x1: Any, x2: Any) -> Any:
    """NT reads an x2 whose leaves are all None as ``x2 = x1``."""
    if x2 is not None and not jax.tree.leaves(x2) and jax.tree.leaves(x1):
        return None
    return x2


def _setup(
    f: Callable,
    trace_axes: Any,
    diagonal_axes: Any,
    vmap_axes: Any,
    x1: Any,
    x2: Any,
    params: Any,
    kwargs: dict,
) -> tuple[Problem, Any, list, list]:
    """The checked :class:`Problem` of a call, ``f``'s output treedef and leaves for x1, x2."""
    kw1, kw2, split = split_kwargs(kwargs, x1, x2)
    same = x2 is None and not split
    x2 = x1 if x2 is None else x2
    sp = SplitParams(params)
    try:
        out1 = jax.eval_shape(lambda: f(params, x1, **kw1))
        out2 = out1 if same else jax.eval_shape(lambda: f(params, x2, **kw2))
    except Exception as e:
        e.add_note("(raised by bigntk while calling f(params, x, **kwargs) to find its output)")
        raise
    leaves1, treedef = jax.tree.flatten(out1)
    leaves2, treedef2 = jax.tree.flatten(out2)
    if treedef != treedef2:
        raise ValueError(
            f"f returns differently structured outputs for x1 ({treedef}) and x2 ({treedef2})."
        )
    specs = []
    for i, (a, b) in enumerate(zip(leaves1, leaves2, strict=True)):
        spec = axes_spec(a.ndim, trace_axes, diagonal_axes)
        where = "f's output" if treedef.num_leaves == 1 else f"output leaf {i} of f"
        check_sizes(spec, a.shape, b.shape, where)
        specs.append(spec)
    nngp_dtypes = [jnp.result_type(a.dtype, b.dtype) for a, b in zip(leaves1, leaves2, strict=True)]
    if vmap_axes is None:
        vmap_axes = infer_vmap_axes(f, x1, x2, params, kw1, kw2)
    vm = canonical_vmap_axes(vmap_axes)
    pb = Problem(
        f=f,
        params=sp,
        x1=x1,
        x2=x2,
        kw1=kw1,
        kw2=kw2,
        same=same,
        specs=specs,
        ntk_dtypes=[jnp.result_type(d, *([sp.dtype] if sp.diff else [])) for d in nngp_dtypes],
        nngp_dtypes=nngp_dtypes,
        vmap=vm,
        out_axes=None if vm is None else out_axes_per_leaf(vm, out1),
    )
    return pb, treedef, leaves1, leaves2


def _kernels(
    f: Callable,
    kinds: tuple[str, ...],
    trace_axes: Any,
    diagonal_axes: Any,
    vmap_axes: Any,
    ntk_impl: Callable | None,
    x1: Any,
    x2: Any,
    params: Any,
    kwargs: dict,
) -> dict[str, Any]:
    """Every requested kind, each a pytree shaped like ``f``'s output."""
    pb, treedef, leaves1, leaves2 = _setup(
        f, trace_axes, diagonal_axes, vmap_axes, x1, x2, params, kwargs
    )
    result = {}
    if "nngp" in kinds:
        result["nngp"] = jax.tree.unflatten(treedef, _nngp(pb))
    if "ntk" in kinds:
        if pb.params.diff:
            ntk = ntk_impl(pb)
        else:  # nothing to differentiate: the NTK is zero
            ntk = [
                jnp.zeros(s.result_shape(a.shape, b.shape), d)
                for s, a, b, d in zip(pb.specs, leaves1, leaves2, pb.ntk_dtypes, strict=True)
            ]
        result["ntk"] = jax.tree.unflatten(treedef, ntk)
    return result


def _info(
    f: Callable, trace_axes: Any, diagonal_axes: Any, vmap_axes: Any, x1, x2, params, kwargs
) -> ProblemInfo:
    """Sizes of a call (evaluated on shapes only; see ``_planning.ProblemInfo``)."""
    pb, _, leaves1, leaves2 = _setup(
        f, trace_axes, diagonal_axes, vmap_axes, x1, x2, params, kwargs
    )
    return problem_info(pb, leaves1, leaves2)


def _program(f, trace_axes, diagonal_axes, vmap_axes, which, chunks: Chunks) -> Compiled:
    """The compiled kernels of ``f`` by implementation ``which`` (not AUTO), cut as ``chunks``."""
    ntk_impl = chunked(get_implementation(which), chunks)
    return Compiled(
        lambda kinds, x1, x2, params, kwargs: _kernels(
            f, kinds, trace_axes, diagonal_axes, vmap_axes, ntk_impl, x1, x2, params, kwargs
        )
    )


def _fixed_chunks_kernel_fn(f, trace_axes, diagonal_axes, vmap_axes, which, chunks) -> Callable:
    """``kernel_fn(x1, x2, get, params, **kwargs) -> {kind: kernels}`` with chunks given.

    The planner normally picks the chunks; this fixes them (tests and benchmarks).
    """
    compiled = _program(f, trace_axes, diagonal_axes, vmap_axes, which, chunks)

    def kernel_fn(x1, x2=None, get=None, params=None, **kwargs):
        kinds, _ = _canonical_get(get)
        return compiled(kinds, x1, _x2_or_none(x1, x2), params, kwargs)

    return kernel_fn


def empirical_kernel_fn(
    f: Callable,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = None,
    implementation: int | NtkImplementation = DEFAULT_NTK_IMPLEMENTATION,
    *,
    memory_budget: float | None = None,
) -> Callable:
    """Empirical (finite-width) NNGP and NTK kernels of ``f``.

    Args:
        f: any JAX function called as ``f(params, x, **kwargs)``; params, inputs
            and outputs may be pytrees.
        trace_axes: output axes to average over (the kernel is divided by their
            total size). Default ``(-1,)``: average over logits.
        diagonal_axes: output axes on which only the ``x1[i], x2[i]`` entries are
            computed; they appear once in the result.
        vmap_axes: batch axes, promising that output slice ``i`` depends only on
            input slice ``i``: None (no promise), an int for all inputs and
            outputs, a pytree used for both, or a 3-tuple
            ``(in_axes, out_axes, kwargs_axes)``. Speeds up the NTK; results are
            unchanged. With None, axis 0 is used where batch independence is
            proved on ``f``'s program (``bigntk.empirical._batch``).
        implementation: an :class:`NtkImplementation` or its int. ``AUTO`` (0)
            picks the fastest for each signature of a call (shapes, dtypes,
            static arguments, ``get``): timed on the first call's arguments, or
            under ``jax.jit`` on stand-in arrays of the traced shapes. The default.
        memory_budget: bytes one call may allocate beyond its arguments (XLA's
            peak of the compiled program). None: a safe fraction of the
            device's free memory. Calls that would exceed it are computed in
            chunks (examples with ``vmap_axes``, parameter groups, output
            basis vectors) with unchanged results; a budget too small for the
            smallest chunks raises :class:`~bigntk.errors.MemoryBudgetError`
            naming the minimum.

    Returns:
        ``kernel_fn(x1, x2, get, params, **kwargs)``. ``x2=None`` means ``x2 = x1``.
        ``get`` is None (a namedtuple ``(nngp, ntk)``), ``'nngp'`` or ``'ntk'``
        (that kernel), or a tuple of them (a namedtuple in that order). Each
        kernel is a pytree shaped like ``f``'s output; for an output leaf of
        shape ``(N, d_1, ..., d_n)`` the leaf keeps the output axes in order,
        traced axes removed, diagonal axes once, every other axis twice and
        adjacent (x1's then x2's): e.g. ``(N, H, W, C)`` with the default
        ``trace_axes=(-1,)`` gives ``(N1, N2, H, H, W, W)``. ``kwargs`` go to both
        calls of ``f``; a 2-tuple is split (x1's, x2's); a single ``rng`` key is
        shared when ``x2`` is None or equal to ``x1`` and folded for x2
        otherwise. ``kernel_fn.plan(x1, x2, get, params, **kwargs)`` returns the
        :class:`~bigntk.empirical.KernelPlan` for such a call (implementation,
        chunks, peak bytes) without returning kernels.

    Example:
        >>> import jax, bigntk as nt
        >>> f = lambda p, x: jax.numpy.tanh(x @ p)
        >>> params = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
        >>> x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
        >>> k = nt.empirical_kernel_fn(f)(x, None, None, params)
        >>> k.nngp.shape, k.ntk.shape
        ((5, 5), (5, 5))
    """
    _check_axes_arg(trace_axes, "trace_axes")
    _check_axes_arg(diagonal_axes, "diagonal_axes")
    impl = as_implementation(implementation)
    check_budget(memory_budget)
    canonical_vmap_axes(vmap_axes)  # type errors now, not at the first call

    def program(which: NtkImplementation, chunks: Chunks) -> Compiled:
        return _program(f, trace_axes, diagonal_axes, vmap_axes, which, chunks)

    def info(kinds, x1, x2, params, kwargs) -> ProblemInfo:
        return shapes_only(
            lambda *a: _info(f, trace_axes, diagonal_axes, vmap_axes, *a),
            kinds, x1, x2, params, kwargs,
        )  # fmt: skip

    planner = Planner(impl, memory_budget, program, info)

    def arguments(x1, x2, get, params):
        if params is None:
            raise TypeError(
                "kernel_fn needs params: call it as kernel_fn(x1, x2, get, params, **kwargs)."
            )
        kinds, single = _canonical_get(get)
        return kinds, single, _x2_or_none(x1, x2)

    def kernel_fn(x1: Any, x2: Any = None, get: Any = None, params: Any = None, **kwargs):
        kinds, single, x2 = arguments(x1, x2, get, params)
        result = planner(kinds, x1, x2, params, kwargs)
        if single:
            return result[kinds[0]]
        if kinds == KINDS:
            return EmpiricalKernel(**result)
        return collections.namedtuple("EmpiricalKernel", kinds)(**result)

    def plan(x1: Any, x2: Any = None, get: Any = None, params: Any = None, **kwargs) -> KernelPlan:
        """How ``kernel_fn`` computes a call with these arguments (decided now if not yet)."""
        kinds, _, x2 = arguments(x1, x2, get, params)
        return planner.plan(kinds, x1, x2, params, kwargs)

    kernel_fn.plan = plan
    return kernel_fn


def empirical_ntk_fn(
    f: Callable,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = None,
    implementation: int | NtkImplementation = DEFAULT_NTK_IMPLEMENTATION,
    *,
    memory_budget: float | None = None,
) -> Callable:
    """Empirical NTK ``Σ_θ ∂f(x1)/∂θ ⊗ ∂f(x2)/∂θ`` of ``f``.

    Arguments as in :func:`empirical_kernel_fn`.

    Returns:
        ``ntk_fn(x1, x2, params, **kwargs)``: a pytree shaped like ``f``'s
        output, with leaves in the output-axis convention (default for an
        ``(N, k)`` output: ``(N1, N2)``).
    """
    kernel_fn = empirical_kernel_fn(
        f, trace_axes, diagonal_axes, vmap_axes, implementation, memory_budget=memory_budget
    )

    def ntk_fn(x1: Any, x2: Any, params: Any, **kwargs):
        return kernel_fn(x1, x2, "ntk", params, **kwargs)

    ntk_fn.plan = lambda x1, x2, params, **kwargs: kernel_fn.plan(x1, x2, "ntk", params, **kwargs)
    return ntk_fn


def empirical_nngp_fn(
    f: Callable,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    *,
    memory_budget: float | None = None,
) -> Callable:
    """Empirical NNGP ``f(x1) ⊗ f(x2)`` of ``f``.

    Arguments as in :func:`empirical_kernel_fn` (the NNGP is never chunked: its
    peak is ``f``'s forward passes and the result).

    Returns:
        ``nngp_fn(x1, x2, params, **kwargs)``: a pytree shaped like ``f``'s
        output, with leaves in the output-axis convention.
    """
    kernel_fn = empirical_kernel_fn(f, trace_axes, diagonal_axes, memory_budget=memory_budget)

    def nngp_fn(x1: Any, x2: Any, params: Any, **kwargs):
        return kernel_fn(x1, x2, "nngp", params, **kwargs)

    return nngp_fn
