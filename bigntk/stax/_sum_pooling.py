"""Sum pooling layers, ``SumPool`` and ``GlobalSumPool`` (params ``()``), with closed forms.

``apply_fn`` is ``jax.example_libraries.stax.SumPool`` (a ``lax.reduce_window``
sum) and ``jnp.sum`` over the spatial axes, as in Neural Tangents;
``padding='CIRCULAR'`` sums ``'VALID'`` windows of the input padded with its own
opposite edges (:func:`bigntk.stax._conv.circular_pad`), as NT does. With
``mask_constant=``, masked positions count as zeros; the output mask is the
mask at each window's centre (``SumPool``; with ``'CIRCULAR'`` as with
``'SAME'``, where NT 0.6.5 raises) or "all positions masked"
(``GlobalSumPool``), as in Neural Tangents. ``kernel_fn``: see
:mod:`bigntk.stax._pool_kernels` (a nonlinearity after pooling activations
over windows raises).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from bigntk.errors import LayerArgumentError
from bigntk.stax import _pool_kernels
from bigntk.stax._closed_form import KernelState
from bigntk.stax._conv import Padding, as_padding
from bigntk.stax._layer import KernelFn, Layer, eval_output_shape
from bigntk.stax._masking import check_channel_mask, masked, pool_mask
from bigntk.stax._pooling import _spatial_axes, global_pool, window_sum_fn

__all__ = ["GlobalSumPool", "SumPool"]


def SumPool(
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str | Padding = "VALID",
    batch_axis: int = 0,
    channel_axis: int = -1,
) -> Layer:
    """Sum pooling over the spatial axes (all but batch and channel).

    Args:
        window_shape: spatial window, e.g. ``(2, 2)``.
        strides: spatial strides; ``None`` means ones (not the window shape).
        padding: ``'VALID'``, ``'SAME'`` (zeros) or ``'CIRCULAR'`` (periodic:
            ``'SAME'`` output shape, windows wrap around the edges), or a
            :class:`~bigntk.stax.Padding`.
        batch_axis: batch axis of the inputs.
        channel_axis: channel axis of the inputs.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``. ``kernel_fn`` supports the default
        axes only (see :mod:`bigntk.stax._pool_kernels` for what may follow it).
    """
    padding = as_padding("SumPool", padding)
    window_shape = tuple(window_shape)
    strides = tuple(strides) if strides else (1,) * len(window_shape)
    if len(strides) != len(window_shape):
        raise LayerArgumentError(
            f"expected SumPool strides of length {len(window_shape)} like window_shape "
            f"{window_shape}, got {strides} instead."
        )

    window_sum = window_sum_fn("SumPool", window_shape, strides, padding, batch_axis, channel_axis)

    def init_fn(rng: jax.Array, input_shape: Sequence[int]) -> tuple[Any, tuple[()]]:
        return eval_output_shape(window_sum, input_shape, batch_axis=batch_axis), ()

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        return window_sum(inputs)

    def mask_fn(mask: jax.Array, input_shape: Any) -> jax.Array:
        check_channel_mask("SumPool", mask, channel_axis)
        shape_padding = "SAME" if padding is Padding.CIRCULAR else padding.value
        return pool_mask(mask, window_shape, strides, shape_padding, batch_axis, channel_axis)

    def transform(state: KernelState) -> KernelState:
        return _pool_kernels.window_pool(
            state, "SumPool", window_sum, window_shape, batch_axis, channel_axis
        )

    return init_fn, masked(apply_fn, mask_fn), KernelFn("SumPool", transform)


def GlobalSumPool(batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Sum over, and remove, all spatial axes.

    Args:
        batch_axis: batch axis of the inputs.
        channel_axis: channel axis of the inputs.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; ``(n, *spatial, c)`` inputs become
        ``(n, c)`` (batch and channel keep their relative order). ``kernel_fn``
        supports the default axes only and sums the kernel over all pairs of
        positions.
    """

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        return jnp.sum(inputs, axis=_spatial_axes(inputs.ndim, batch_axis, channel_axis))

    return global_pool("GlobalSumPool", apply_fn, False, batch_axis, channel_axis)
