"""The output-axis convention shared by every kernel implementation.

A kernel between two outputs ``f(x1)`` and ``f(x2)`` of shape ``(d_0, ..., d_{n-1})``
keeps the output axes in their original order, and for each axis ``k``:

* if ``k`` is traced, it disappears: the kernel is the *mean* over that axis;
* if ``k`` is diagonal, it appears once (the ``x1`` and ``x2`` indices are equal);
* otherwise it appears twice, adjacent: ``x1``'s copy, then ``x2``'s.

Implementations describe the arrays they produce with *labels*: every axis of
an operand is either an output axis seen from one side (``Out(k, side)``, side
1 for x1, 2 for x2, 0 when both sides share the index) or an axis to sum over
(``Sum(i)``, e.g. a parameter axis). :func:`contract` turns any product of
labelled operands into the convention with one ``einsum``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import jax.numpy as jnp

from bigntk.errors import AxisSizeMismatchError


class Out(NamedTuple):
    """Output axis ``k`` of x1's side (1), x2's side (2), or both (0)."""

    k: int
    side: int


class Sum(NamedTuple):
    """An axis summed over (contracted); equal ids are the same index."""

    id: int


Label = Out | Sum


class AxesSpec(NamedTuple):
    """Canonical trace/diagonal axes for one output leaf of rank ``ndim``."""

    ndim: int
    trace: tuple[int, ...]
    diagonal: tuple[int, ...]

    def result_labels(self) -> list[tuple[int, int]]:
        """The ``(k, side)`` of each axis of the result, in order."""
        labels = []
        for k in range(self.ndim):
            if k in self.trace:
                continue
            if k in self.diagonal:
                labels.append((k, 0))
            else:
                labels += [(k, 1), (k, 2)]
        return labels

    def result_shape(self, shape1: Sequence[int], shape2: Sequence[int]) -> tuple[int, ...]:
        """Shape of the kernel between outputs of shapes ``shape1`` and ``shape2``."""
        return tuple(shape2[k] if side == 2 else shape1[k] for k, side in self.result_labels())


def canonical_axes(axes: int | Iterable[int], ndim: int, name: str) -> tuple[int, ...]:
    """Sorted, de-duplicated, non-negative axes; ``ndim == 0`` ignores all axes."""
    if isinstance(axes, int):
        axes = (axes,)
    try:
        axes = tuple(axes)
    except TypeError:
        raise TypeError(
            f"{name} must be an int or a sequence of ints, got {axes!r} instead."
        ) from None
    if ndim == 0:
        return ()
    out = set()
    for a in axes:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TypeError(f"{name} must contain ints, got {a!r} in {axes!r} instead.")
        if not -ndim <= a < ndim:
            raise ValueError(
                f"{name}={axes!r} contains axis {a}, but the output has only {ndim} axes; "
                f"valid axes are {-ndim}..{ndim - 1}."
            )
        out.add(a % ndim)
    return tuple(sorted(out))


def axes_spec(ndim: int, trace_axes, diagonal_axes) -> AxesSpec:
    """Canonicalise ``trace_axes`` and ``diagonal_axes`` for an output of rank ``ndim``."""
    trace = canonical_axes(trace_axes, ndim, "trace_axes")
    diagonal = canonical_axes(diagonal_axes, ndim, "diagonal_axes")
    both = set(trace) & set(diagonal)
    if both:
        raise ValueError(
            f"Axes {sorted(both)} are both traced and diagonal (trace_axes={trace_axes!r}, "
            f"diagonal_axes={diagonal_axes!r}); an axis can be one or the other."
        )
    return AxesSpec(ndim, trace, diagonal)


def check_sizes(spec: AxesSpec, shape1, shape2, where: str = "the output") -> None:
    """Raise if a traced or diagonal axis has different sizes for x1 and x2."""
    if len(shape1) != len(shape2):
        raise ValueError(
            f"{where} has rank {len(shape1)} for x1 but rank {len(shape2)} for x2; "
            "kernels need outputs of the same rank."
        )
    for k in (*spec.trace, *spec.diagonal):
        if shape1[k] != shape2[k]:
            what = "traced" if k in spec.trace else "diagonal"
            hint = (
                "x1 and x2 need the same number of examples for that; "
                if k == 0
                else "both outputs need the same size there; "
            )
            raise AxisSizeMismatchError(
                f"Axis {k} of {where} is {what}, but its size is {shape1[k]} for x1 and "
                f"{shape2[k]} for x2 (output shapes {tuple(shape1)} and {tuple(shape2)}). "
                f"{hint}remove {k} from trace_axes/diagonal_axes to keep both copies."
            )


def contract(
    operands: Sequence[tuple[jnp.ndarray, Sequence[Label]]],
    spec: AxesSpec,
    dtype=None,
) -> jnp.ndarray:
    """Multiply labelled operands and arrange the result in the output convention.

    Args:
        operands: ``(array, labels)`` pairs, one label per array axis.
        spec: which output axes are traced or diagonal.
        dtype: dtype to compute and return in (defaults to einsum's promotion).

    Returns:
        The kernel, with axes as described in the module docstring, traced
        axes averaged.
    """
    ids: dict[tuple, int] = {}

    def index(label: Label) -> int:
        if isinstance(label, Out):
            shared = label.side == 0 or label.k in spec.trace or label.k in spec.diagonal
            key = ("out", label.k, 1 if shared else label.side)
        else:
            key = ("sum", label.id)
        return ids.setdefault(key, len(ids))

    sizes: dict[int, int] = {}
    args = []
    trace_size: dict[int, int] = {}
    for array, labels in operands:
        if array.ndim != len(labels):
            raise AssertionError(f"operand of shape {array.shape} given labels {labels}")
        subs = [index(label) for label in labels]
        for n, i, label in zip(array.shape, subs, labels, strict=True):
            if sizes.setdefault(i, n) != n:
                raise AxisSizeMismatchError(
                    f"Axis {label} has size {n} in one operand and {sizes[i]} in another."
                )
            if isinstance(label, Out) and label.k in spec.trace:
                trace_size[label.k] = n
        args += [array if dtype is None else array.astype(dtype), subs]
    out = [index(Out(k, side)) for k, side in spec.result_labels()]
    result = jnp.einsum(*args, out)
    norm = math.prod(trace_size.values())
    return result / norm if norm != 1 else result
