"""Fixed (parameterless) linear maps: ``DotGeneral``, ``Index`` with ``Slice``, ``ImageResize``.

Each has params ``()`` and no closed-form ``kernel_fn`` in bigntk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bigntk.errors import LayerArgumentError
from bigntk.stax._layer import KernelFn, Layer
from bigntk.stax._masking import masked

__all__ = ["DotGeneral", "ImageResize", "Index", "Slice"]


def DotGeneral(
    *,
    lhs: Any = None,
    rhs: Any = None,
    dimension_numbers: Any = (((), ()), ((), ())),
    precision: lax.Precision | None = None,
    batch_axis: int = 0,
    channel_axis: int = -1,
) -> Layer:
    """Dot product of the inputs with a constant array, :func:`jax.lax.dot_general`.

    ``apply_fn`` computes ``dot_general(inputs, rhs, dimension_numbers)`` when
    ``rhs`` is given, ``dot_general(lhs, inputs, dimension_numbers)`` when
    ``lhs`` is given (the constant is cast to the inputs' dtype).

    Args:
        lhs: constant left-hand side, or ``None`` (the inputs are the left side).
        rhs: constant right-hand side, or ``None``. At most one of ``lhs`` and
            ``rhs`` may be given; with neither the layer is the identity (as
            Neural Tangents documents; NT 0.6.5 itself returns NaNs there).
        dimension_numbers: ``((lhs_contracting, rhs_contracting), (lhs_batch,
            rhs_batch))``; the default contracts nothing (an outer product, or a
            scaling for a scalar constant).
        precision: ``None`` or a :class:`jax.lax.Precision`.
        batch_axis: batch axis of the inputs (used by Neural Tangents' ``kernel_fn``).
        channel_axis: channel axis of the inputs (likewise).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; ``kernel_fn`` raises
        :class:`~bigntk.errors.UnsupportedLayerError`.
    """
    del batch_axis
    channel = channel_axis
    if lhs is not None and rhs is not None:
        raise LayerArgumentError(
            "expected at most one of lhs and rhs (the other factor is the layer inputs), "
            "got both; e.g. DotGeneral(rhs=2.0)."
        )
    is_lhs = lhs is not None
    other = lhs if is_lhs else rhs

    def dot_fn(x: jax.Array) -> jax.Array:
        if other is None:
            return x
        const = jnp.asarray(other).astype(x.dtype)
        operands = (const, x) if is_lhs else (x, const)
        return lax.dot_general(*operands, dimension_numbers, precision)

    def init_fn(rng: jax.Array, input_shape: Sequence[int]) -> tuple[Any, tuple[()]]:
        dtype = jnp.result_type(float) if other is None else jnp.asarray(other).dtype
        out = jax.eval_shape(dot_fn, jax.ShapeDtypeStruct(tuple(input_shape), dtype))
        return out.shape, ()

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        return dot_fn(inputs)

    def mask_fn(mask: jax.Array, input_shape: Sequence[int]) -> jax.Array:
        """Masked where only masked entries contribute."""
        shape = list(input_shape)
        shape[channel] = mask.shape[channel]
        unmasked = jnp.broadcast_to(~mask, tuple(shape))
        if other is None:
            return mask
        const = jnp.asarray(other).astype(bool)
        operands = (const, unmasked) if is_lhs else (unmasked, const)
        return ~lax.dot_general(*operands, dimension_numbers)

    return init_fn, masked(apply_fn, mask_fn), KernelFn("DotGeneral", None)


class _Slice:
    """``Slice[idx]`` returns ``idx`` unchanged, e.g. ``Slice[:, 1:3, ::-1]``."""

    def __getitem__(self, idx: Any) -> Any:
        return idx

    def __repr__(self) -> str:
        return "bigntk.stax.Slice"


Slice = _Slice()
"""Builds the index of :func:`Index`: ``Slice[1, :, 2:8:3] == (1, slice(None), slice(2, 8, 3))``."""


def _index_entries(idx: Any, ndim: int) -> list[Any]:
    """One index entry per input axis (``Ellipsis`` expanded, missing ones ``:``)."""
    entries = list(idx) if isinstance(idx, tuple) else [idx]
    if any(e is None for e in entries):
        return []  # new axes: the caller gives up on unknown sizes
    n_ellipsis = sum(e is Ellipsis for e in entries)
    if n_ellipsis > 1:
        raise LayerArgumentError(f"expected at most one ... in the Index idx, got {idx!r}.")
    missing = ndim - (len(entries) - n_ellipsis)
    if n_ellipsis:
        at = next(i for i, e in enumerate(entries) if e is Ellipsis)
        entries[at : at + 1] = [slice(None)] * missing
    return entries + [slice(None)] * (ndim - len(entries))


def Index(idx: Any, batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Index the inputs like a NumPy array: ``apply_fn`` returns ``inputs[idx]``.

    Args:
        idx: the index, best built with :data:`Slice`, e.g.
            ``Index(Slice[::2, :4, :4])`` or ``Index(Slice[:, 0, ...])``.
        batch_axis: batch axis of the inputs (used by Neural Tangents' ``kernel_fn``).
        channel_axis: channel axis of the inputs (likewise).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)`` with params ``()``. ``init_fn`` accepts
        unknown (negative) sizes on axes indexed by ``:`` only. ``kernel_fn``
        raises :class:`~bigntk.errors.UnsupportedLayerError`.
    """
    del batch_axis, channel_axis

    def init_fn(rng: jax.Array, input_shape: Sequence[int]) -> tuple[Any, tuple[()]]:
        shape = list(input_shape)
        unknown = [a for a, d in enumerate(shape) if d is None or d < 0]
        if not unknown:
            return np.empty(shape, dtype=np.bool_)[idx].shape, ()
        entries = _index_entries(idx, len(shape))
        if not entries:
            raise LayerArgumentError(
                f"Index with new axes (None) expected an input shape of known sizes, got "
                f"{tuple(input_shape)} instead; give init_fn the actual sizes."
            )
        kept = {}  # output axis -> unknown size
        out_axis = 0
        for a, entry in enumerate(entries):
            if a in unknown:
                if entry != slice(None):
                    raise LayerArgumentError(
                        f"Index expected a known size for input axis {a} indexed by "
                        f"{entry!r}, got input shape {tuple(input_shape)} instead; give "
                        f"init_fn the actual size of that axis."
                    )
                kept[out_axis] = shape[a]
                shape[a] = 0
            if not isinstance(entry, int | np.integer):
                out_axis += 1
        out = list(np.empty(shape, dtype=np.bool_)[idx].shape)
        for a, size in kept.items():
            out[a] = size
        return tuple(out), ()

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        return inputs[idx]

    def mask_fn(mask: jax.Array, input_shape: Any) -> jax.Array:
        return mask[idx]

    return init_fn, masked(apply_fn, mask_fn), KernelFn("Index", None)


def ImageResize(
    shape: Sequence[int],
    method: str | jax.image.ResizeMethod,
    antialias: bool = True,
    precision: lax.Precision = lax.Precision.HIGHEST,
    batch_axis: int = 0,
    channel_axis: int = -1,
) -> Layer:
    """Resize the inputs with :func:`jax.image.resize`.

    Args:
        shape: the output shape, one entry per input axis (batch and channel
            included); ``-1`` keeps that axis' size.
        method: any :func:`jax.image.resize` method, e.g. ``'linear'``, ``'nearest'``,
            ``'cubic'``, ``'lanczos3'``.
        antialias: use an antialiasing filter when downsampling.
        precision: precision of the resize's contractions.
        batch_axis: batch axis of the inputs (used by Neural Tangents' ``kernel_fn``).
        channel_axis: channel axis of the inputs (likewise).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)`` with params ``()``; ``kernel_fn``
        raises :class:`~bigntk.errors.UnsupportedLayerError`.
    """
    del batch_axis, channel_axis
    shape = tuple(shape)

    def out_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
        if len(input_shape) != len(shape):
            raise LayerArgumentError(
                f"ImageResize expected inputs with {len(shape)} axes (one per entry of "
                f"shape={shape}), got shape {tuple(input_shape)} instead."
            )
        return tuple(d if s == -1 else s for s, d in zip(shape, input_shape, strict=True))

    def init_fn(rng: jax.Array, input_shape: Sequence[int]) -> tuple[Any, tuple[()]]:
        return out_shape(input_shape), ()

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        return jax.image.resize(
            inputs, out_shape(inputs.shape), method, antialias=antialias, precision=precision
        )

    def mask_fn(mask: jax.Array, input_shape: Any) -> jax.Array:
        """Masked where only masked entries contribute (resize the unmasked indicator)."""
        resized = jax.image.resize(
            ~mask, out_shape(mask.shape), method, antialias=antialias, precision=precision
        )
        return ~resized.astype(bool)

    return init_fn, masked(apply_fn, mask_fn), KernelFn("ImageResize", None)
