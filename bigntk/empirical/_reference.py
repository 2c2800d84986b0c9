"""A float64 reference for the kernels: full Jacobians, ``tensordot``, and ``einsum``.

Slow and memory-hungry by design (every Jacobian ``(*out, *params)`` is held
in full), and sharing none of the implementations' code: no output-axis
machinery, no ``vmap_axes``, no chunking. ``bigntk verify`` recomputes sampled
kernel entries with it to check a store's values independently of the
implementation that built it.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _differentiated(leaf: Any) -> bool:
    """Floating array leaves and Python floats are differentiated (as in the kernels)."""
    if isinstance(leaf, float):
        return True
    return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)


def _to64(tree: Any) -> Any:
    def cast(v: Any) -> Any:
        if isinstance(v, float) or (hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.floating)):
            return jnp.asarray(v, jnp.float64)
        return v

    return jax.tree.map(cast, tree)


def _axes(axes: int | Sequence[int], ndim: int) -> set[int]:
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    return {a % ndim for a in axes} if ndim else set()


def _convention(full: np.ndarray, ndim: int, trace_axes: Any, diagonal_axes: Any) -> np.ndarray:
    """``(*out1, *out2) -> `` the output-axis convention, from its definition.

    Traced axes are summed (then divided by their size: a mean), diagonal axes
    kept once, every other axis kept twice and adjacent.
    """
    trace, diagonal = _axes(trace_axes, ndim), _axes(diagonal_axes, ndim)
    first = string.ascii_lowercase[:ndim]
    second = "".join(
        first[k] if k in trace or k in diagonal else string.ascii_uppercase[k] for k in range(ndim)
    )
    kept = "".join(
        "" if k in trace else first[k] if k in diagonal else first[k] + second[k]
        for k in range(ndim)
    )
    size = math.prod(full.shape[k] for k in trace)
    return np.einsum(f"{first}{second}->{kept}", full) / size


def reference_kernels(
    f: Callable,
    params: Any,
    x1: Any,
    x2: Any = None,
    kinds: Sequence[str] = ("nngp", "ntk"),
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    **kwargs: Any,
) -> dict[str, Any]:
    """The NNGP and NTK of ``f`` computed naively in float64.

    Args:
        f: called as ``f(params, x, **kwargs)``; params, inputs and outputs may be pytrees.
        params: floating leaves (and Python floats) are differentiated, cast to float64.
        x1, x2: inputs (``x2=None``: ``x2 = x1``); floating leaves cast to float64.
        kinds: ``'nngp'`` and/or ``'ntk'``.
        trace_axes, diagonal_axes: as in :func:`bigntk.empirical_kernel_fn`.
        **kwargs: passed as given to both calls of ``f`` (no 2-tuple split, no ``rng`` folding).

    Returns:
        ``{kind: kernels}``, each a pytree shaped like ``f``'s output whose leaves
        are float64 NumPy arrays in the output-axis convention, e.g. ``(N1, N2)``
        for an ``(N, k)`` output with the default ``trace_axes``.
    """
    x2 = x1 if x2 is None else x2
    with jax.enable_x64(True):
        params, x1, x2 = _to64(params), _to64(x1), _to64(x2)
        leaves, treedef = jax.tree.flatten(params)
        which = [i for i, leaf in enumerate(leaves) if _differentiated(leaf)]

        def outputs(diff: list, x: Any) -> list:
            full = list(leaves)
            for i, d in zip(which, diff, strict=True):
                full[i] = d
            out = f(jax.tree.unflatten(treedef, full), x, **kwargs)
            return [jnp.asarray(o, jnp.float64) for o in jax.tree.leaves(out)]

        diff = [leaves[i] for i in which]
        out_tree = jax.tree.structure(f(params, x1, **kwargs))
        sides = [(x1, outputs(diff, x1)), (x2, outputs(diff, x2))]
        jacobians = []
        if "ntk" in kinds:
            jacobian = jax.jit(jax.jacobian(outputs))  # one compilation when x1, x2 shapes agree
            jacobians = [jacobian(diff, x) for x, _ in sides]
        result = {}
        for kind in kinds:
            kernels = []
            for o, (a, b) in enumerate(zip(sides[0][1], sides[1][1], strict=True)):
                a, b = np.asarray(a), np.asarray(b)
                if kind == "nngp":
                    full = np.tensordot(a, b, 0)
                else:
                    full = np.zeros(a.shape + b.shape)
                    for w, leaf in enumerate(diff):
                        p = list(range(a.ndim, a.ndim + np.ndim(leaf)))
                        j1, j2 = (np.asarray(j[o][w]) for j in jacobians)
                        full = full + np.tensordot(j1, j2, (p, p))
                kernels.append(_convention(full, a.ndim, trace_axes, diagonal_axes))
            result[kind] = jax.tree.unflatten(out_tree, kernels)
    return result
