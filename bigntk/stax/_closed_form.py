"""Closed-form infinite-width NNGP / NTK propagation for fully connected layers.

Conventions follow Neural Tangents' ``stax``:

* input kernel: ``nngp = x1 . x2 / d`` over the channel (trailing) axis, ``ntk = 0``;
* ``Dense`` (ntk parameterization): ``nngp' = W_std**2 nngp + b_std**2`` and
  ``ntk' = nngp' + W_std**2 ntk``; (standard): ``ntk' = (d / s0) nngp +
  W_std**2 ntk (+ 1 with a bias)``;
* ``Relu``: arc-cosine kernel; ``Erf(a, b, c)``: arcsine kernel, with
  ``a**2 * k + c**2`` applied to the NNGP and ``a**2`` to the NTK.

The variances of ``x1`` and ``x2`` (``var1``, ``var2``) are tracked separately
from their cross-covariance. Activations may keep spatial axes before a
``Flatten``: kernels then carry one axis per spatial axis of each input, zipped
as ``(n1, n2, s_1, s_1, ..., s_k, s_k)``; variances have shape ``(n, *spatial)``.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from bigntk.errors import LayerArgumentError, UnsupportedLayerError

__all__ = [
    "KernelState",
    "dense",
    "erf",
    "flatten",
    "from_inputs",
    "materialize",
    "relu",
    "require_gaussian",
]


@dataclasses.dataclass(frozen=True)
class KernelState:
    """Kernel of the activations between two layers.

    Until a layer needs covariances, the raw inputs are kept (``x1``, ``x2``),
    so that a leading ``Flatten`` costs nothing.

    Attributes:
        feature_shape: non-batch shape of the activations, ``(*spatial, channels)``.
        compute_ntk: whether the NTK is propagated.
        is_gaussian: whether the activations are Gaussian (outputs of ``Dense``).
        source: what produced the activations, for error messages.
        x1: raw inputs, shape ``(n1, *feature_shape)``; ``None`` once materialized.
        x2: raw inputs, shape ``(n2, *feature_shape)``; ``None`` once materialized.
        nngp: shape ``(n1, n2, s_1, s_1, ..., s_k, s_k)``.
        ntk: same shape as ``nngp``, or ``None`` when not computed.
        var1: variances of ``x1``'s activations, shape ``(n1, *spatial)``; ``None``
            when unknown (after sum pooling of activations: it would need the
            covariances between positions of ``x1`` with itself).
        var2: variances of ``x2``'s activations, shape ``(n2, *spatial)``, or ``None``.
    """

    feature_shape: tuple[int, ...]
    compute_ntk: bool
    is_gaussian: bool = False
    source: str = "the network inputs"
    x1: jax.Array | None = None
    x2: jax.Array | None = None
    nngp: jax.Array | None = None
    ntk: jax.Array | None = None
    var1: jax.Array | None = None
    var2: jax.Array | None = None


def from_inputs(x1: Any, x2: Any, compute_ntk: bool) -> KernelState:
    """Start from inputs ``x1`` ``(n1, *spatial, d)`` and ``x2`` ``(n2, *spatial, d)``."""
    x1 = jnp.asarray(x1, dtype=float)
    x2 = x1 if x2 is None else jnp.asarray(x2, dtype=float)
    if x1.ndim < 2:
        raise LayerArgumentError(
            f"expected x1 of shape (n1, ..., d) with at least 2 axes, got shape "
            f"{x1.shape} instead; reshape it, e.g. x1.reshape(-1, 1)."
        )
    if x2.shape[1:] != x1.shape[1:]:
        raise LayerArgumentError(
            f"expected x2 of shape (n2, *{x1.shape[1:]}) to match x1 {x1.shape}, got "
            f"{x2.shape} instead."
        )
    return KernelState(feature_shape=x1.shape[1:], compute_ntk=compute_ntk, x1=x1, x2=x2)


def materialize(state: KernelState) -> KernelState:
    """Replace raw inputs by their covariances (``x1 . x2 / d`` per spatial pair)."""
    if state.x1 is None:
        return state
    x1, x2 = state.x1, state.x2
    k = x1.ndim - 2
    d = x1.shape[-1]
    cross = jnp.tensordot(x1, x2, axes=((-1,), (-1,))) / d  # (n1, *S, n2, *S)
    perm = (0, k + 1) + tuple(j for i in range(k) for j in (1 + i, k + 2 + i))
    nngp = jnp.transpose(cross, perm)
    return dataclasses.replace(
        state,
        x1=None,
        x2=None,
        nngp=nngp,
        ntk=jnp.zeros_like(nngp) if state.compute_ntk else None,
        var1=jnp.sum(x1 * x1, axis=-1) / d,
        var2=jnp.sum(x2 * x2, axis=-1) / d,
    )


def _outer(
    var1: jax.Array, var2: jax.Array, op: Callable[[jax.Array, jax.Array], jax.Array]
) -> jax.Array:
    """``op(var1[i, a, ...], var2[j, b, ...])`` laid out like ``nngp``."""
    shape1 = (var1.shape[0], 1) + tuple(d for s in var1.shape[1:] for d in (s, 1))
    shape2 = (1, var2.shape[0]) + tuple(d for s in var2.shape[1:] for d in (1, s))
    return op(var1.reshape(shape1), var2.reshape(shape2))


def _safe_sqrt(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.maximum(x, 0.0))


def dense(
    state: KernelState,
    *,
    out_dim: int,
    W_std: float,
    b_std: float | None,
    parameterization: str,
    s: tuple[int, int],
) -> KernelState:
    """Kernel after ``Dense`` acting on the trailing (channel) axis."""
    state = materialize(state)

    def affine(mat: jax.Array) -> jax.Array:
        mat = W_std**2 * mat
        return mat if b_std is None else mat + b_std**2

    nngp = affine(state.nngp)
    ntk = state.ntk
    if ntk is not None:
        if parameterization == "ntk":
            ntk = nngp + W_std**2 * ntk
        else:
            fan_in = state.feature_shape[-1] / s[0]
            ntk = fan_in * state.nngp + W_std**2 * ntk
            if b_std is not None:
                ntk = ntk + 1.0
    width = out_dim if parameterization == "ntk" else out_dim * s[1]
    return dataclasses.replace(
        state,
        nngp=nngp,
        ntk=ntk,
        var1=None if state.var1 is None else affine(state.var1),
        var2=None if state.var2 is None else affine(state.var2),
        feature_shape=state.feature_shape[:-1] + (width,),
        is_gaussian=True,
        source="Dense",
    )


def require_gaussian(state: KernelState, layer: str) -> KernelState:
    """``state`` materialized; raise unless it holds Gaussian pre-activations with variances."""
    state = materialize(state)
    if not state.is_gaussian:
        raise LayerArgumentError(
            f"{layer}.kernel_fn expected Gaussian pre-activations (the output of a "
            f"Dense layer), got the output of {state.source} instead; put a Dense "
            f"layer before {layer}."
        )
    if state.var1 is None:
        raise UnsupportedLayerError(
            f"{layer}.kernel_fn needs the variances of its inputs, which bigntk's "
            f"closed form does not track after pooling activations over windows "
            f"(the layer before was {state.source}); pool the network inputs instead, "
            f"or put {layer} before the pooling layer."
        )
    return state


def relu(state: KernelState) -> KernelState:
    """Kernel after ``Relu`` (arc-cosine kernel of degree 1)."""
    state = require_gaussian(state, "Relu")
    cov = state.nngp
    root = _safe_sqrt(_outer(state.var1, state.var2, operator.mul) - cov**2)
    angle = jnp.where((root == 0) & (cov == 0), jnp.pi / 2, jnp.arctan2(root, cov))
    dot_sigma = 0.5 - angle / (2 * jnp.pi)
    return dataclasses.replace(
        state,
        nngp=root / (2 * jnp.pi) + dot_sigma * cov,
        ntk=None if state.ntk is None else state.ntk * dot_sigma,
        var1=state.var1 / 2,
        var2=state.var2 / 2,
        is_gaussian=False,
        source="Relu",
    )


def erf(state: KernelState, *, a: float, b: float, c: float) -> KernelState:
    """Kernel after ``a * erf(b * x) + c`` (arcsine kernel)."""
    state = require_gaussian(state, "Erf")
    cov, var1, var2 = b**2 * state.nngp, b**2 * state.var1, b**2 * state.var2
    prod = _outer(1 + 2 * var1, 1 + 2 * var2, operator.mul)
    root = _safe_sqrt(prod - 4 * cov**2)
    factor = 2 / jnp.pi

    def diag(var: jax.Array) -> jax.Array:
        return a**2 * factor * jnp.arctan2(var, jnp.sqrt(var + 0.25)) + c**2

    ntk = state.ntk
    if ntk is not None:
        ntk = a**2 * (b**2 * ntk) * (2 * factor / root)
    return dataclasses.replace(
        state,
        nngp=a**2 * factor * jnp.arctan2(2 * cov, root) + c**2,
        ntk=ntk,
        var1=diag(var1),
        var2=diag(var2),
        is_gaussian=False,
        source="Erf",
    )


def flatten(state: KernelState) -> KernelState:
    """Kernel after ``Flatten``: the mean over spatial positions of each input."""
    size = math.prod(state.feature_shape)
    if state.x1 is not None:
        return dataclasses.replace(
            state,
            x1=state.x1.reshape(state.x1.shape[0], size),
            x2=state.x2.reshape(state.x2.shape[0], size),
            feature_shape=(size,),
            is_gaussian=False,
            source="Flatten",
        )

    def trace(mat: jax.Array | None) -> jax.Array | None:
        while mat is not None and mat.ndim > 2:
            mat = jnp.trace(mat, axis1=-2, axis2=-1) / mat.shape[-1]
        return mat

    def mean(var: jax.Array | None) -> jax.Array | None:
        return None if var is None else jnp.mean(var, axis=tuple(range(1, var.ndim)))

    return dataclasses.replace(
        state,
        nngp=trace(state.nngp),
        ntk=trace(state.ntk),
        var1=mean(state.var1),
        var2=mean(state.var2),
        feature_shape=(size,),
        is_gaussian=False,
        source="Flatten",
    )
