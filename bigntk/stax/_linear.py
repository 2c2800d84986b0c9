"""The fully connected layer ``Dense`` (convolutions are in ``_conv``).

Parameters are ``(W, b)`` drawn as in Neural Tangents: ``k1, k2 = split(rng)``,
``W = normal(k1, ...)``, ``b = normal(k2, ...)`` or ``None`` when ``b_std`` is
``None``. Under ``parameterization='ntk'`` they are standard normal and the
layer computes ``W_std / sqrt(fan_in) * x @ W + b_std * b``; under
``'standard'`` they are pre-scaled (``W_std / sqrt(fan_in / s[0])``,
``b_std``) and the layer computes ``x @ W / sqrt(s[0]) + b``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from bigntk.errors import LayerArgumentError, UnsupportedLayerError
from bigntk.stax import _closed_form
from bigntk.stax._layer import KernelFn, Layer
from bigntk.stax._masking import all_masked, masked

__all__ = ["Dense", "check_parameterization"]

_PARAMETERIZATIONS = ("ntk", "standard")


def Dense(
    out_dim: int,
    W_std: float = 1.0,
    b_std: float | None = None,
    batch_axis: int = 0,
    channel_axis: int = -1,
    parameterization: str = "ntk",
    s: tuple[int, int] = (1, 1),
) -> Layer:
    """Fully connected layer acting on ``channel_axis``.

    Args:
        out_dim: output width (``out_dim * s[1]`` under ``'standard'``).
        W_std: weight standard deviation.
        b_std: bias standard deviation; ``None`` means no bias (``b`` is ``None``).
        batch_axis: batch axis (used by ``kernel_fn`` only).
        channel_axis: feature axis the weights act on.
        parameterization: ``'ntk'`` or ``'standard'``.
        s: ``'standard'`` only: width scalings ``(input, output)`` of the layer.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``. Params ``(W, b)``: ``W`` of shape
        ``(in_dim, out_dim)``; ``b`` of shape ``(1, ..., out_dim, ..., 1)``
        (``out_dim`` at ``channel_axis``, e.g. ``(1, out_dim)`` for 2D inputs).
    """
    parameterization = check_parameterization(parameterization)
    width = out_dim if parameterization == "ntk" else out_dim * s[1]

    def init_fn(rng: jax.Array, input_shape: Sequence[int]) -> tuple[Any, Any]:
        input_shape = tuple(input_shape)
        ax = channel_axis % len(input_shape)
        fan_in = input_shape[ax]
        rng_w, rng_b = jax.random.split(rng)
        W = jax.random.normal(rng_w, (fan_in, width))
        b = None
        if b_std is not None:
            b_shape = [1] * len(input_shape)
            b_shape[ax] = width
            b = jax.random.normal(rng_b, tuple(b_shape))
        if parameterization == "standard":
            W = W * (W_std / (fan_in / s[0]) ** 0.5)
            b = None if b is None else b * b_std
        return input_shape[:ax] + (width,) + input_shape[ax + 1 :], (W, b)

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        W, b = params
        prod = jnp.moveaxis(jnp.tensordot(inputs, W, (channel_axis, 0)), -1, channel_axis)
        if parameterization == "ntk":
            out = (W_std / inputs.shape[channel_axis] ** 0.5) * prod
            return out if b is None else out + b_std * b
        out = prod / s[0] ** 0.5
        return out if b is None else out + b

    def transform(state: _closed_form.KernelState) -> _closed_form.KernelState:
        ndim = len(state.feature_shape) + 1
        if batch_axis % ndim != 0 or channel_axis % ndim != ndim - 1:
            raise UnsupportedLayerError(
                f"Dense.kernel_fn supports only batch_axis=0 and channel_axis=-1, got "
                f"batch_axis={batch_axis}, channel_axis={channel_axis} instead."
            )
        return _closed_form.dense(
            state, out_dim=out_dim, W_std=W_std, b_std=b_std, parameterization=parameterization, s=s
        )

    return init_fn, masked(apply_fn, all_masked(channel_axis)), KernelFn("Dense", transform)


def check_parameterization(parameterization: str) -> str:
    """``parameterization`` lower-cased, or a clear error unless 'ntk' or 'standard'."""
    value = parameterization.lower()
    if value not in _PARAMETERIZATIONS:
        raise LayerArgumentError(
            f"expected parameterization in {_PARAMETERIZATIONS}, got {parameterization!r} instead."
        )
    return value
