"""STRUCTURED_DERIVATIVES: the NTK from per-equation structured derivatives.

For each parameter leaf ``w`` and each pair of its uses on the x1 and x2
sides, the NTK gains

    df1/dy1 · dy1/dw · (dy2/dw)ᵀ · (df2/dy2)ᵀ,

one ``einsum`` whose index assignment encodes the output trace and diagonal
axes and the structure of the two factors; the ``out × params`` Jacobians are
never formed. See Novak, Sohl-Dickstein & Schoenholz, "Fast Finite Width
Neural Tangent Kernel" (ICML 2022).

Primitives without a structure rule are logged once per kernel trace, at
DEBUG level, on the ``bigntk.empirical.structured`` logger.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import jax
import jax.numpy as jnp

from bigntk.empirical._axes import AxesSpec, Out, Sum, contract
from bigntk.empirical._problem import Problem
from bigntk.empirical._structured_derivatives._derivatives import Derivatives, Use, derivatives

logger = logging.getLogger("bigntk.empirical.structured")


def _side(pb: Problem, x: Any, kw: dict) -> Derivatives:
    diff = pb.params.diff
    if pb.vmap is None:
        return derivatives(lambda d: pb.call(d, x, kw), diff)
    return pb.map_examples([(x, kw)], lambda f1: derivatives(f1, diff))


def _term(
    pb: Problem,
    o: int,
    pair: tuple[tuple[Derivatives, Use], tuple[Derivatives, Use]],
    spec: AxesSpec,
    dtype: Any,
) -> jnp.ndarray:
    """The NTK of output leaf ``o`` contributed by one pair of uses of a parameter."""
    ids: dict[tuple, int] = {}
    sizes: dict[tuple, int] = {}
    operands = []

    def label(key: tuple) -> Sum:
        return Sum(ids.setdefault(key, len(ids)))

    for side, (d, use) in enumerate(pair, start=1):
        f = use.factor
        w_axis = {lab: k for k, lab in enumerate(f.w)}

        def name(lab: int, side: int = side, w_axis: dict = w_axis) -> tuple:
            return ("w", w_axis[lab]) if lab in w_axis else (side, lab)

        for lab, n in f.sizes:
            sizes[name(lab)] = n
        batch = [] if pb.vmap is None else [Out(pb.out_axes[o], side)]
        df = d.df[use.key][o]
        operands.append((df, pb.out_labels(o, side) + [label(name(lab)) for lab in f.y]))
        for array, labels in zip(f.arrays, f.labels, strict=True):
            operands.append((array, batch + [label(name(lab)) for lab in labels]))
    scale = math.prod(n for key, n in sizes.items() if key not in ids)
    result = contract(operands, spec, dtype)
    return result if scale == 1 else result * scale


def ntk_structured_derivatives(pb: Problem) -> list:
    """One NTK per output leaf, each of shape ``spec.result_shape``."""
    d1 = _side(pb, pb.x1, pb.kw1)
    d2 = d1 if pb.same else _side(pb, pb.x2, pb.kw2)
    for name in dict.fromkeys(d1.fallbacks + d2.fallbacks):
        logger.debug(
            "STRUCTURED_DERIVATIVES: no structure rule for primitive '%s'; using a dense "
            "Jacobian for it (correct, slower).",
            name,
        )
    out = []
    shapes1 = shapes2 = None
    for o, (spec, dtype) in enumerate(zip(pb.specs, pb.ntk_dtypes, strict=True)):
        total = None
        for uses1, uses2 in zip(d1.uses, d2.uses, strict=True):
            for u1 in uses1:
                for u2 in uses2:
                    term = _term(pb, o, ((d1, u1), (d2, u2)), spec, dtype)
                    total = term if total is None else total + term
        if total is None:  # no parameter reaches the outputs
            if shapes1 is None:
                shapes1, shapes2 = (
                    jax.eval_shape(lambda x=x, kw=kw: pb.call(pb.params.diff, x, kw))
                    for x, kw in pb.sides()
                )
            total = jnp.zeros(spec.result_shape(shapes1[o].shape, shapes2[o].shape), dtype)
        out.append(total)
    return out
