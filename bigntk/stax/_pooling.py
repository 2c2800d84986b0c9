"""Average pooling layers: ``AvgPool`` and ``GlobalAvgPool`` (params ``()``).

``padding='CIRCULAR'`` pools the input padded with its own opposite edges
(:func:`bigntk.stax._conv.circular_pad`) with ``'VALID'`` windows, as Neural
Tangents does: the output has the ``'SAME'`` shape and every window divides by
``prod(window_shape)``. Output masks are the masks at the windows' centres
(for ``'CIRCULAR'`` as for ``'SAME'``; NT 0.6.5 raises on masked ``'CIRCULAR'``
pooling). ``kernel_fn``: see :mod:`bigntk.stax._pool_kernels`
(default axes; a nonlinearity after pooling activations over windows raises).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from bigntk.errors import LayerArgumentError
from bigntk.stax import _pool_kernels
from bigntk.stax._closed_form import KernelState
from bigntk.stax._conv import Padding, as_padding, circular_pad
from bigntk.stax._layer import KernelFn, Layer, eval_output_shape
from bigntk.stax._masking import check_channel_mask, masked, masked_mean_var, pool_mask

__all__ = ["AvgPool", "GlobalAvgPool"]


def _spatial_axes(ndim: int, batch_axis: int, channel_axis: int) -> tuple[int, ...]:
    non_spatial = (batch_axis % ndim, channel_axis % ndim)
    return tuple(i for i in range(ndim) if i not in non_spatial)


def AvgPool(
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str | Padding = "VALID",
    normalize_edges: bool = False,
    batch_axis: int = 0,
    channel_axis: int = -1,
) -> Layer:
    """Average pooling over the spatial axes (all but batch and channel).

    Args:
        window_shape: spatial window, e.g. ``(2, 2)``.
        strides: spatial strides; ``None`` means ones.
        padding: ``'VALID'``, ``'SAME'`` (zeros) or ``'CIRCULAR'`` (periodic:
            ``'SAME'`` output shape, windows wrap around the edges), or a
            :class:`~bigntk.stax.Padding`.
        normalize_edges: with ``'SAME'`` padding, ``True`` divides each sum by
            the number of non-padding entries in its window (as
            ``jax.example_libraries.stax.AvgPool``); ``False`` (Neural Tangents'
            default) divides by ``prod(window_shape)`` everywhere. No effect
            with ``'VALID'`` or ``'CIRCULAR'`` (every window is full).
        batch_axis: batch axis of the inputs.
        channel_axis: channel axis of the inputs.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; ``kernel_fn`` supports the default
        axes only.
    """
    padding = as_padding("AvgPool", padding)
    window_shape = tuple(window_shape)
    strides = tuple(strides) if strides else (1,) * len(window_shape)

    window_sum = window_sum_fn("AvgPool", window_shape, strides, padding, batch_axis, channel_axis)

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        total = window_sum(inputs)
        if normalize_edges and padding is Padding.SAME:
            return total / window_sum(jnp.ones_like(inputs))
        return total / math.prod(window_shape)

    def init_fn(rng: jax.Array, input_shape: Sequence[int]) -> tuple[Any, tuple[()]]:
        return eval_output_shape(window_sum, input_shape, batch_axis=batch_axis), ()

    def mask_fn(mask: jax.Array, input_shape: Any) -> jax.Array:
        check_channel_mask("AvgPool", mask, channel_axis)
        shape_padding = "SAME" if padding is Padding.CIRCULAR else padding.value
        return pool_mask(mask, window_shape, strides, shape_padding, batch_axis, channel_axis)

    def transform(state: KernelState) -> KernelState:
        return _pool_kernels.window_pool(
            state, "AvgPool", lambda x: apply_fn((), x), window_shape, batch_axis, channel_axis
        )

    return init_fn, masked(apply_fn, mask_fn), KernelFn("AvgPool", transform)


def GlobalAvgPool(batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Average over, and remove, all spatial axes.

    Args:
        batch_axis: batch axis of the inputs.
        channel_axis: channel axis of the inputs.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; ``(n, *spatial, c)`` inputs become
        ``(n, c)`` (batch and channel keep their relative order). ``kernel_fn``
        supports the default axes only and averages the kernel over all pairs of
        positions.
    """

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        axes = _spatial_axes(inputs.ndim, batch_axis, channel_axis)
        mask = kwargs.get("mask")
        if mask is None:
            return jnp.mean(inputs, axis=axes)
        return jnp.squeeze(masked_mean_var(inputs, axes, mask)[0], axes)

    return global_pool("GlobalAvgPool", apply_fn, True, batch_axis, channel_axis)


def window_sum_fn(
    name: str,
    window_shape: tuple[int, ...],
    strides: tuple[int, ...],
    padding: Padding,
    batch_axis: int,
    channel_axis: int,
) -> Any:
    """``x -> `` the sum over each pooling window of ``x`` (CIRCULAR: over the wrapped input)."""

    def full(values: tuple[int, ...], ndim: int) -> tuple[int, ...]:
        spatial = _spatial_axes(ndim, batch_axis, channel_axis)
        if len(spatial) != len(values):
            raise LayerArgumentError(
                f"expected inputs with {len(values)} spatial axes for {name} window "
                f"{window_shape}, got {ndim}-dimensional inputs instead (batch axis "
                f"{batch_axis}, channel axis {channel_axis})."
            )
        out = [1] * ndim
        for axis, value in zip(spatial, values, strict=True):
            out[axis] = value
        return tuple(out)

    def window_sum(x: jax.Array) -> jax.Array:
        window, steps = full(window_shape, x.ndim), full(strides, x.ndim)
        if padding is Padding.CIRCULAR:
            x = circular_pad(
                x, window_shape, strides, _spatial_axes(x.ndim, batch_axis, channel_axis)
            )
            return lax.reduce_window(x, 0.0, lax.add, window, steps, "VALID")
        return lax.reduce_window(x, 0.0, lax.add, window, steps, padding.value)

    return window_sum


def global_pool(
    name: str, apply_fn: Any, average: bool, batch_axis: int, channel_axis: int
) -> Layer:
    """A layer reducing all spatial axes with ``apply_fn`` (a mean if ``average``, else a sum)."""

    def init_fn(rng: jax.Array, input_shape: Sequence[int]) -> tuple[Any, tuple[()]]:
        spatial = _spatial_axes(len(input_shape), batch_axis, channel_axis)
        return tuple(d for i, d in enumerate(input_shape) if i not in spatial), ()

    def mask_fn(mask: jax.Array, input_shape: Any) -> jax.Array:
        check_channel_mask(name, mask, channel_axis)
        return jnp.all(mask, axis=_spatial_axes(mask.ndim, batch_axis, channel_axis))

    def transform(state: KernelState) -> KernelState:
        return _pool_kernels.global_pool(state, name, average, batch_axis, channel_axis)

    return init_fn, masked(apply_fn, mask_fn), KernelFn(name, transform)
