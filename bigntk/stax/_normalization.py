"""Layer normalisation, ``LayerNorm`` (params ``()``, no learned scale or shift)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from bigntk.stax._layer import KernelFn, Layer
from bigntk.stax._masking import masked, masked_mean_var

__all__ = ["LayerNorm"]


def LayerNorm(
    axis: int | Sequence[int] = -1, eps: float = 1e-12, batch_axis: int = 0, channel_axis: int = -1
) -> Layer:
    """Normalise to zero mean and unit variance over ``axis``.

    Computes ``(x - mean) / sqrt(eps + var)`` with the mean and (biased)
    variance taken over ``axis``; like Neural Tangents there are no parameters.

    Args:
        axis: axis or axes to normalise over.
        eps: added to the variance to avoid division by zero.
        batch_axis: batch axis of the inputs (used by Neural Tangents' ``kernel_fn``).
        channel_axis: channel axis of the inputs (likewise).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; ``kernel_fn`` raises
        :class:`~bigntk.errors.UnsupportedLayerError`.
    """
    del batch_axis, channel_axis

    def init_fn(rng: jax.Array, input_shape: Any) -> tuple[Any, tuple[()]]:
        return input_shape, ()

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        axes = tuple(a % inputs.ndim for a in axes)
        mean, var = masked_mean_var(inputs, axes, kwargs.get("mask"), get_var=True)
        return (inputs - mean) / jnp.sqrt(eps + var)

    return init_fn, masked(apply_fn), KernelFn("LayerNorm", None)
