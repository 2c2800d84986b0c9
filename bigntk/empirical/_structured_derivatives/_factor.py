"""``∂y/∂w`` of one equation, kept as a product of small labelled arrays.

A :class:`Factor` describes the Jacobian of an equation's output ``y`` in one
parameter ``w`` without forming it. Every axis of ``y``, of ``w`` and of each
array carries an integer label; equal labels are the same index. Then

    ∂y/∂w [y-index, w-index] = Σ_{labels on neither y nor w} Π arrays,

where a label shared by a ``y`` axis and a ``w`` axis is a Kronecker delta. This
covers the structures of Novak et al. (2022):

* *trace* (``y`` and ``w`` share a label and no array has it): the Jacobian is
  the identity along that axis, e.g. the output features of ``x @ w``;
* *diagonal* (``y``, ``w`` and an array share it): block diagonal, e.g. the
  batch axes of ``dot_general`` or ``w * c`` with ``c`` of ``w``'s shape;
* *broadcast* (a label on ``y`` only): constant along that output axis, e.g. a
  bias broadcast over the batch;
* a label on no array nor ``y`` nor ``w``: a sum of ones, i.e. its size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Factor:
    """``∂y/∂w`` as labelled arrays (see the module docstring).

    Attributes:
        arrays: the arrays, multiplied together.
        labels: the label of each axis of each array.
        y: the label of each axis of ``y``.
        w: the label of each axis of ``w``.
        sizes: ``(label, size)`` of every label used.
    """

    arrays: tuple[Any, ...]
    labels: tuple[tuple[int, ...], ...] = dataclasses.field(metadata=dict(static=True))
    y: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    w: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    sizes: tuple[tuple[int, int], ...] = dataclasses.field(metadata=dict(static=True))

    @staticmethod
    def make(
        arrays: Iterable[tuple[Any, Sequence[int]]],
        y: Sequence[int],
        w: Sequence[int],
        y_shape: Sequence[int],
        w_shape: Sequence[int],
    ) -> Factor:
        """Build and check a factor; sizes are read from the shapes."""
        arrays = [(a, tuple(lab)) for a, lab in arrays]
        sizes: dict[int, int] = {}
        for shape, labels in [(y_shape, y), (w_shape, w)] + [(a.shape, lab) for a, lab in arrays]:
            if len(shape) != len(labels):
                raise AssertionError(f"labels {labels} for shape {tuple(shape)}")
            for n, lab in zip(shape, labels, strict=True):
                if sizes.setdefault(lab, int(n)) != n:
                    raise AssertionError(f"label {lab} has sizes {sizes[lab]} and {n}")
        if len(set(y)) != len(y) or len(set(w)) != len(w):
            raise AssertionError(f"repeated label in y={y} or w={w}")
        return Factor(
            tuple(a for a, _ in arrays),
            tuple(lab for _, lab in arrays),
            tuple(y),
            tuple(w),
            tuple(sorted(sizes.items())),
        )

    @property
    def is_cheap(self) -> bool:
        """No array with more than one element: a relabelling and a scale."""
        return all(a.size <= 1 for a in self.arrays)


def identity(shape: Sequence[int]) -> Factor:
    """``y = w``."""
    labels = tuple(range(len(shape)))
    return Factor.make([], labels, labels, shape, shape)


def compose(first: Factor, then: Factor) -> Factor:
    """``∂z/∂w`` from ``first = ∂y/∂w`` and ``then = ∂z/∂y``."""
    shift = 1 + max((lab for lab, _ in first.sizes), default=-1)
    rename = {lab: lab + shift for lab, _ in then.sizes}
    for mine, theirs in zip(then.w, first.y, strict=True):
        rename[mine] = theirs

    def sub(labels: Sequence[int]) -> tuple[int, ...]:
        return tuple(rename[lab] for lab in labels)

    sizes = dict(first.sizes)
    for lab, n in then.sizes:
        if sizes.setdefault(rename[lab], n) != n:
            raise AssertionError(f"composing factors: label sizes {sizes[rename[lab]]} and {n}")
    return Factor(
        first.arrays + then.arrays,
        first.labels + tuple(sub(lab) for lab in then.labels),
        sub(then.y),
        first.w,
        tuple(sorted(sizes.items())),
    )
