"""Parameterless layers that only move or reshape values: ``Identity``, ``Flatten``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from bigntk.errors import LayerArgumentError, UnsupportedLayerError
from bigntk.stax import _closed_form
from bigntk.stax._layer import KernelFn, Layer
from bigntk.stax._masking import masked

__all__ = ["Flatten", "Identity"]


def Identity() -> Layer:
    """The identity layer (params ``()``).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.
    """

    def init_fn(rng: jax.Array, input_shape: Any) -> tuple[Any, tuple[()]]:
        return input_shape, ()

    def apply_fn(params: Any, inputs: Any, **kwargs: Any) -> Any:
        return inputs

    return init_fn, masked(apply_fn), KernelFn("Identity", lambda state: state)


def Flatten(batch_axis: int = 0, batch_axis_out: int = 0) -> Layer:
    """Flatten all non-batch axes into one (params ``()``).

    Args:
        batch_axis: batch axis of the inputs.
        batch_axis_out: batch axis of the outputs, ``0`` for ``(n, features)``
            or ``1`` for ``(features, n)``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``. Inputs ``(n, *rest)`` become
        ``(n, prod(rest))``. ``kernel_fn`` averages the kernel over spatial
        positions and supports only the default axes.
    """
    if batch_axis_out in (0, -2):
        batch_axis_out = 0
    elif batch_axis_out in (1, -1):
        batch_axis_out = 1
    else:
        raise LayerArgumentError(
            f"expected Flatten batch_axis_out 0 or 1, got {batch_axis_out} instead."
        )

    def output_shape(input_shape: Sequence[int]) -> tuple[int, int]:
        ax = batch_axis % len(input_shape)
        batch = input_shape[ax]
        features = math.prod(d for i, d in enumerate(input_shape) if i != ax)
        return (batch, features) if batch_axis_out == 0 else (features, batch)

    def init_fn(rng: jax.Array, input_shape: Sequence[int]) -> tuple[Any, tuple[()]]:
        return output_shape(input_shape), ()

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        shape = output_shape(inputs.shape)
        return jnp.moveaxis(inputs, batch_axis, -batch_axis_out).reshape(shape)

    def transform(state: _closed_form.KernelState) -> _closed_form.KernelState:
        ndim = len(state.feature_shape) + 1
        if batch_axis % ndim != 0 or batch_axis_out != 0:
            raise UnsupportedLayerError(
                f"Flatten.kernel_fn supports only batch_axis=0 and batch_axis_out=0, "
                f"got batch_axis={batch_axis}, batch_axis_out={batch_axis_out} instead."
            )
        return _closed_form.flatten(state)

    def mask_fn(mask: jax.Array, input_shape: Sequence[int]) -> jax.Array:
        mask = jnp.broadcast_to(mask, tuple(input_shape))
        return jnp.moveaxis(mask, batch_axis, -batch_axis_out).reshape(output_shape(mask.shape))

    return init_fn, masked(apply_fn, mask_fn), KernelFn("Flatten", transform)
