"""Closed-form kernels of pooling layers (sum or average, windowed or global).

A pooling layer maps each channel of each example linearly over the spatial
positions, ``y[a] = sum_s P[a, s] x[s]``, so the covariance of the outputs is
``K'[a, b] = sum_{s, s'} P[a, s] K[s, s'] P[b, s']``: the same map applied to
the kernel's axes of ``x1`` and then to those of ``x2``. Pooling the network
*inputs* is exact in every respect (the raw inputs are pooled). After pooling
*activations* over windows larger than one position, the variances of the
outputs are not known (they need the covariances between positions of ``x1``
with itself, which the closed form does not carry): ``Dense``, ``Flatten`` and
more pooling keep a closed form, a nonlinearity raises
:class:`~bigntk.errors.UnsupportedLayerError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bigntk.errors import UnsupportedLayerError
from bigntk.stax._closed_form import KernelState

__all__ = ["global_pool", "window_pool"]

Pool = Callable[[jax.Array], jax.Array]


def window_pool(
    state: KernelState,
    layer: str,
    pool: Pool,
    window_shape: Sequence[int],
    batch_axis: int,
    channel_axis: int,
) -> KernelState:
    """Kernel after ``pool``, the layer's own map of ``(n, *spatial, c)`` arrays.

    Args:
        state: the kernel of the layer's inputs.
        layer: the layer name, for error messages.
        pool: linear in the inputs, the same for every example and channel, e.g.
            a windowed sum; given ``(n, *spatial, 1)`` arrays too.
        window_shape: the spatial window; variances survive a window of ones.
        batch_axis: the layer's batch axis (only 0 is supported).
        channel_axis: the layer's channel axis (only the last one is supported).
    """
    _check_default_axes(layer, state, batch_axis, channel_axis)
    if state.x1 is not None:
        x1, x2 = pool(state.x1), pool(state.x2)
        return dataclasses.replace(state, x1=x1, x2=x2, feature_shape=x1.shape[1:], source=layer)
    k = len(state.feature_shape) - 1
    side1, side2 = tuple(range(2, 2 + 2 * k, 2)), tuple(range(3, 3 + 2 * k, 2))

    def pool_kernel(mat: jax.Array | None) -> jax.Array | None:
        if mat is None:
            return None
        return _on_axes(_on_axes(mat, side1, pool), side2, pool)

    def pool_variance(var: jax.Array | None) -> jax.Array | None:
        if var is None or any(w != 1 for w in window_shape):
            return None  # see the module docstring
        return pool(var[..., None])[..., 0]  # a window of ones only subsamples

    nngp = pool_kernel(state.nngp)
    return dataclasses.replace(
        state,
        nngp=nngp,
        ntk=pool_kernel(state.ntk),
        var1=pool_variance(state.var1),
        var2=pool_variance(state.var2),
        feature_shape=nngp.shape[2::2] + state.feature_shape[-1:],
        source=layer,
    )


def global_pool(
    state: KernelState, layer: str, mean: bool, batch_axis: int, channel_axis: int
) -> KernelState:
    """Kernel after summing (``mean=False``) or averaging all spatial positions away."""
    _check_default_axes(layer, state, batch_axis, channel_axis)
    reduce = jnp.mean if mean else jnp.sum
    spatial = tuple(range(1, len(state.feature_shape)))
    if state.x1 is not None:
        return dataclasses.replace(
            state,
            x1=reduce(state.x1, axis=spatial),
            x2=reduce(state.x2, axis=spatial),
            feature_shape=state.feature_shape[-1:],
            source=layer,
        )
    if not spatial:  # nothing to pool
        return state

    def pool(mat: jax.Array | None) -> jax.Array | None:
        return None if mat is None else reduce(mat, axis=tuple(range(2, mat.ndim)))

    return dataclasses.replace(
        state,
        nngp=pool(state.nngp),
        ntk=pool(state.ntk),
        var1=None,
        var2=None,
        feature_shape=state.feature_shape[-1:],
        source=layer,
    )


def _on_axes(mat: jax.Array, axes: tuple[int, ...], pool: Pool) -> jax.Array:
    """``pool`` applied to ``axes`` of ``mat`` (the other axes are batch-like)."""
    rest = [i for i in range(mat.ndim) if i not in axes]
    moved = jnp.transpose(mat, rest + list(axes))
    lead = moved.shape[: len(rest)]
    out = pool(moved.reshape((-1,) + moved.shape[len(rest) :] + (1,)))[..., 0]
    out = out.reshape(lead + out.shape[1:])
    return jnp.transpose(out, np.argsort(rest + list(axes)))


def _check_default_axes(layer: str, state: KernelState, batch_axis: int, channel_axis: int) -> None:
    ndim = len(state.feature_shape) + 1
    if batch_axis % ndim != 0 or channel_axis % ndim != ndim - 1:
        raise UnsupportedLayerError(
            f"{layer}.kernel_fn supports only batch_axis=0 and channel_axis=-1, got "
            f"batch_axis={batch_axis}, channel_axis={channel_axis} instead."
        )
