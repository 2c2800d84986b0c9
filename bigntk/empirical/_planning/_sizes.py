"""Sizes of one kernel call, read from its shapes: :class:`ProblemInfo`.

They bound the knobs :func:`~bigntk.empirical._planning._memory.fit_chunks`
turns, and give the rough size estimate that lets an explicit implementation
skip compiling for XLA's peak.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bigntk.empirical._chunking import batch_size, example_sides, min_param_group
from bigntk.empirical._problem import Problem

_SAFETY = 4  # the rough size estimate's margin


class ProblemInfo(NamedTuple):
    """Sizes of one call, read from its shapes."""

    has_params: bool
    n_params: int
    min_group: int
    example_sides: tuple[int, ...]
    n1: int | None
    n2: int | None
    basis: int
    rough_bytes: int


def rough_bytes(itemsize: int, jacobians: int, held: int, result: int) -> int:
    """A generous size of an unchunked call from element counts: the per-output
    Jacobians, the activations the outputs' reverse passes hold, the result."""
    return int(_SAFETY * itemsize * (jacobians + held + result))


def activation_size(jaxpr: Any) -> int:
    """Elements of every intermediate value of a jaxpr, sub-jaxprs included."""
    total = 0
    for eqn in jaxpr.eqns:
        total += sum(int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape"))
        for p in eqn.params.values():
            for sub in p if isinstance(p, list | tuple) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += activation_size(inner)
    return total


def problem_info(pb: Problem, leaves1: list, leaves2: list) -> ProblemInfo:
    """The sizes of ``pb``, whose output leaves for x1 and x2 are ``leaves1``, ``leaves2``."""
    diff = pb.params.diff
    n_params = sum(int(leaf.size) for leaf in diff)
    if not diff:
        return ProblemInfo(False, 0, 1, (), None, None, 1, 0)
    sides = ((pb.x1, pb.kw1, leaves1), (pb.x2, pb.kw2, leaves2))
    activations = [
        activation_size(jax.make_jaxpr(lambda d, x=x, kw=kw: pb.call(d, x, kw))(diff).jaxpr)
        for x, kw, _ in sides
    ]
    out_sizes = sum(math.prod(a.shape) for a in leaves1 + leaves2)
    if pb.vmap is None:  # each output's reverse pass may hold every activation
        held = out_sizes * sum(activations)
    else:  # batch-independent: an example's outputs hold that example's activations only
        held = sum(
            sum(math.prod(a.shape) for a in leaves) * acts // max(batch_size(pb, side) or 1, 1)
            for side, ((_, _, leaves), acts) in enumerate(zip(sides, activations, strict=True), 1)
        )
    if pb.vmap is None:
        basis = max(math.prod(a.shape) for a in leaves2)
    else:
        basis = max(
            math.prod(a.shape) // max(a.shape[b], 1)
            for a, b in zip(leaves2, pb.out_axes, strict=True)
        )
    result = sum(
        math.prod(s.result_shape(a.shape, b.shape))
        for s, a, b in zip(pb.specs, leaves1, leaves2, strict=True)
    )
    itemsize = max(jnp.dtype(d).itemsize for d in pb.ntk_dtypes)
    return ProblemInfo(
        has_params=True,
        n_params=n_params,
        min_group=min_param_group(pb.params),
        example_sides=example_sides(pb),
        n1=batch_size(pb, 1),
        n2=batch_size(pb, 2),
        basis=max(basis, 1),
        rough_bytes=rough_bytes(itemsize, out_sizes * n_params, held, result),
    )
