"""JACOBIAN_CONTRACTION: materialise ``df/dθ`` for x1 and x2, then contract.

Cost: one reverse-mode Jacobian per input (``|out|`` backward passes, or one
per example with ``vmap_axes``) and, per parameter leaf, one ``dot_general``
of two ``out × params`` Jacobians. Memory holds both Jacobians in full.
"""

from __future__ import annotations

import jax

from bigntk.empirical._axes import Sum, contract
from bigntk.empirical._problem import Problem


def _jacobians(pb: Problem, x, kw) -> list[list]:
    """``J[o][w]``: Jacobian of output leaf ``o`` in parameter leaf ``w``."""
    diff = pb.params.diff
    if pb.vmap is None:
        return jax.jacrev(lambda d: pb.call(d, x, kw))(diff)
    return pb.map_examples([(x, kw)], lambda f1: jax.jacrev(f1)(diff))


def ntk_jacobian_contraction(pb: Problem) -> list:
    """One NTK per output leaf, each of shape ``spec.result_shape``."""
    diff = pb.params.diff
    j1 = _jacobians(pb, pb.x1, pb.kw1)
    j2 = j1 if pb.same else _jacobians(pb, pb.x2, pb.kw2)
    out = []
    for o, (spec, dtype) in enumerate(zip(pb.specs, pb.ntk_dtypes, strict=True)):
        labels1, labels2 = pb.out_labels(o, 1), pb.out_labels(o, 2)
        total = None
        for w, leaf in enumerate(diff):
            p = [Sum(i) for i in range(leaf.ndim)]
            term = contract([(j1[o][w], labels1 + p), (j2[o][w], labels2 + p)], spec, dtype)
            total = term if total is None else total + term
        out.append(total)
    return out
