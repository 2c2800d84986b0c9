"""The empirical NNGP: ``f(x1) ⊗ f(x2)`` in the output-axis convention."""

from __future__ import annotations

from bigntk.empirical._axes import Out, contract
from bigntk.empirical._problem import Problem


def nngp(pb: Problem) -> list:
    """One NNGP per output leaf, each of shape ``spec.result_shape``."""
    diff = pb.params.diff
    fx1 = pb.call(diff, pb.x1, pb.kw1)
    fx2 = fx1 if pb.same else pb.call(diff, pb.x2, pb.kw2)
    return [
        contract(
            [(a, [Out(k, 1) for k in range(a.ndim)]), (b, [Out(k, 2) for k in range(b.ndim)])],
            spec,
            dtype,
        )
        for a, b, spec, dtype in zip(fx1, fx2, pb.specs, pb.nngp_dtypes, strict=True)
    ]
