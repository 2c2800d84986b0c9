"""Affine layers with trainable weights: ``Dense`` and ``Conv``.

Parameters are ``(W, b)`` drawn as in Neural Tangents: ``k1, k2 = split(rng)``,
``W = normal(k1, ...)``, ``b = normal(k2, ...)`` or ``None`` when ``b_std`` is
``None``. Under ``parameterization='ntk'`` they are standard normal and the
layer computes ``W_std / sqrt(fan_in) * x @ W + b_std * b``; under
``'standard'`` they are pre-scaled (``W_std / sqrt(fan_in / s[0])``,
``b_std``) and the layer computes ``x @ W / sqrt(s[0]) + b``.
"""

from __future__ import annotations

import functools
import math
import string
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from bigntk.errors import LayerArgumentError, UnsupportedLayerError
from bigntk.stax import _closed_form
from bigntk.stax._layer import KernelFn, Layer, check_padding, eval_output_shape

__all__ = ["Conv", "Dense"]

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
    parameterization = _check_parameterization(parameterization)
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

    return init_fn, apply_fn, KernelFn("Dense", transform)


def Conv(
    out_chan: int,
    filter_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    W_std: float = 1.0,
    b_std: float | None = None,
    dimension_numbers: tuple[str, str, str] | None = None,
    parameterization: str = "ntk",
    s: tuple[int, int] = (1, 1),
) -> Layer:
    """Convolution, by default on ``NHWC`` inputs with ``HWIO`` kernels.

    Args:
        out_chan: output channels (``out_chan * s[1]`` under ``'standard'``).
        filter_shape: spatial filter shape, e.g. ``(3, 3)``.
        strides: spatial strides; ``None`` means ones.
        padding: ``'VALID'`` or ``'SAME'`` (``'CIRCULAR'`` is not supported).
        W_std: weight standard deviation.
        b_std: bias standard deviation; ``None`` means no bias.
        dimension_numbers: ``(lhs_spec, rhs_spec, out_spec)`` as in
            :func:`jax.lax.conv_general_dilated`; ``None`` means channels-last
            (``NHWC``, ``HWIO``, ``NHWC`` for 2D filters).
        parameterization: ``'ntk'`` or ``'standard'``.
        s: ``'standard'`` only: width scalings ``(input, output)`` of the layer.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``. Params ``(W, b)``: ``W`` laid out by
        ``rhs_spec`` (``(H, W, in_chan, out_chan)`` by default); ``b`` of shape
        ``(1, 1, 1, out_chan)`` (``out_chan`` at the ``C`` of ``out_spec``).
        ``fan_in = in_chan * prod(filter_shape)``. ``kernel_fn`` raises
        :class:`~bigntk.errors.UnsupportedLayerError`.
    """
    parameterization = _check_parameterization(parameterization)
    check_padding("Conv", padding)
    filter_shape = tuple(filter_shape)
    strides = tuple(strides) if strides else (1,) * len(filter_shape)
    if dimension_numbers is None:
        spatial = "".join(c for c in string.ascii_uppercase if c not in "NCIO")
        spatial = spatial[: len(filter_shape)]
        dimension_numbers = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    width = out_chan if parameterization == "ntk" else out_chan * s[1]
    conv = functools.partial(
        lax.conv_general_dilated,
        window_strides=strides,
        padding=padding,
        dimension_numbers=dimension_numbers,
    )

    def fan_in(input_shape: Sequence[int]) -> int:
        return input_shape[lhs_spec.index("C")] * math.prod(filter_shape)

    def init_fn(rng: jax.Array, input_shape: Sequence[int]) -> tuple[Any, Any]:
        filters = iter(filter_shape)
        kernel_shape = tuple(
            width if c == "O" else input_shape[lhs_spec.index("C")] if c == "I" else next(filters)
            for c in rhs_spec
        )
        output_shape = eval_output_shape(
            conv,
            input_shape,
            jax.ShapeDtypeStruct(kernel_shape, "float32"),
            batch_axis=lhs_spec.index("N"),
            out_batch_axis=out_spec.index("N"),
        )
        rng_w, rng_b = jax.random.split(rng)
        W = jax.random.normal(rng_w, kernel_shape)
        b = None
        if b_std is not None:
            b = jax.random.normal(rng_b, tuple(width if c == "C" else 1 for c in out_spec))
        if parameterization == "standard":
            W = W * (W_std / (fan_in(input_shape) / s[0]) ** 0.5)
            b = None if b is None else b * b_std
        return output_shape, (W, b)

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        W, b = params
        if parameterization == "ntk":
            out = (W_std / fan_in(inputs.shape) ** 0.5) * conv(inputs, W)
            return out if b is None else out + b_std * b
        out = conv(inputs, W) / s[0] ** 0.5
        return out if b is None else out + b

    return init_fn, apply_fn, KernelFn("Conv", None)


def _check_parameterization(parameterization: str) -> str:
    value = parameterization.lower()
    if value not in _PARAMETERIZATIONS:
        raise LayerArgumentError(
            f"expected parameterization in {_PARAMETERIZATIONS}, got {parameterization!r} instead."
        )
    return value
