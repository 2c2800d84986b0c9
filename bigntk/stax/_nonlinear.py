"""More elementwise nonlinearities of Neural Tangents' ``stax`` (params ``()``).

Piecewise linear (``ABRelu``, ``LeakyRelu``, ``Abs``, ``Sign``), trigonometric
and exponential (``Sin``, ``Cos``, ``Rbf``, ``Exp``, ``Gaussian``, ``Gabor``,
``Sigmoid_like``) and the kernel-only ``ExpNormalized``. ``apply_fn`` computes
the same expression as Neural Tangents; ``kernel_fn`` is the closed form of
:mod:`bigntk.stax._dual` and, as every nonlinearity, needs Gaussian
pre-activations (a ``Dense`` layer before it).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from bigntk.errors import UnsupportedLayerError
from bigntk.stax import _dual
from bigntk.stax._elementwise import Erf, _elementwise
from bigntk.stax._layer import Layer

__all__ = [
    "ABRelu",
    "Abs",
    "Cos",
    "Exp",
    "ExpNormalized",
    "Gabor",
    "Gaussian",
    "LeakyRelu",
    "Rbf",
    "Sigmoid_like",
    "Sign",
    "Sin",
]


def _layer(fn: Any, name: str, dual: _dual.Dual) -> Layer:
    return _elementwise(fn, name, functools.partial(_dual.apply, name=name, dual=dual))


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> Layer:
    """``a * min(x, 0) + b * max(x, 0)``.

    Args:
        a: slope for ``x < 0``.
        b: slope for ``x > 0``.
        do_stabilize: accepted for Neural Tangents compatibility; it only
            rescales NT's intermediate kernels, the closed form here needs none.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.
    """
    del do_stabilize

    def fn(x: jax.Array) -> jax.Array:
        return a * jnp.minimum(x, 0) + b * jnp.maximum(x, 0)

    return _layer(fn, f"ABRelu({a}, {b})", _dual.abrelu(a, b))


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> Layer:
    """Leaky ReLU, ``alpha * min(x, 0) + max(x, 0)`` (``ABRelu(alpha, 1)``)."""
    return ABRelu(alpha, 1, do_stabilize)


def Abs(do_stabilize: bool = False) -> Layer:
    """Absolute value, ``|x|`` (``ABRelu(-1, 1)``)."""
    return ABRelu(-1, 1, do_stabilize)


def Sign() -> Layer:
    """``sign(x)``. Its derivative vanishes almost everywhere: the layer's NTK term is 0."""
    return _layer(jnp.sign, "Sign", _dual.sign())


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """``a * sin(b * x + c)``.

    Args:
        a: output scale.
        b: input scale.
        c: input phase shift.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.
    """

    def fn(x: jax.Array) -> jax.Array:
        return a * jnp.sin(b * x + c)

    return _layer(fn, f"Sin({a}, {b}, {c})", _dual.sin(a, b, c))


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """``a * cos(b * x + c)``, computed as Neural Tangents does: ``Sin(a, b, c + pi / 2)``."""
    return Sin(a, b, c + jnp.pi / 2)


def Rbf(gamma: float = 1.0) -> Layer:
    """``sqrt(2) * sin(sqrt(2 gamma) x + pi / 4)``, whose NNGP is an RBF kernel.

    The NNGP after the layer is ``exp(-gamma (q11 + q22 - 2 q12))``, i.e.
    ``exp(-gamma / d |x1 - x2|**2)`` right after ``Dense(W_std=1)`` on inputs of
    width ``d``.

    Args:
        gamma: inverse squared length scale, ``1 / (2 l**2)``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.
    """

    def fn(x: jax.Array) -> jax.Array:
        return jnp.sqrt(2) * jnp.sin(jnp.sqrt(2 * gamma) * x + jnp.pi / 4)

    return _layer(fn, f"Rbf({gamma})", _dual.rbf(gamma))


def Exp(a: float = 1, b: float = 1) -> Layer:
    """``a * exp(b * x)``."""

    def fn(x: jax.Array) -> jax.Array:
        return a * jnp.exp(b * x)

    return _layer(fn, f"Exp({a}, {b})", _dual.exp(a, b))


def Gaussian(a: float = 1, b: float = -1) -> Layer:
    """``a * exp(b * x**2)``. The NNGP is finite only while ``4 b var < 1``."""

    def fn(x: jax.Array) -> jax.Array:
        return a * jnp.exp(b * x**2)

    return _layer(fn, f"Gaussian({a}, {b})", _dual.gaussian(a, b))


def Gabor() -> Layer:
    """``exp(-x**2) * sin(x)``; the NTK factor is the derivative of the NNGP in the covariance."""

    def fn(x: jax.Array) -> jax.Array:
        return jnp.exp(-(x**2)) * jnp.sin(x)

    return _layer(fn, "Gabor", _dual.gabor())


def Sigmoid_like() -> Layer:
    """A sigmoid-like ``0.5 * erf(x / 2.4020563531719796) + 0.5`` (an :func:`Erf`)."""
    return Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5)


def ExpNormalized(gamma: float = 1, shift: float = -1, do_clip: bool = False) -> Layer:
    """Kernel-only layer simulating the "Gaussian normalized kernel".

    From "Neural Kernels Without Tangents" (Shankar et al., 2020): with
    ``r = sqrt(q11 q22)``, the NNGP becomes ``r * exp(gamma (q12 / r + shift))``
    and the NTK is multiplied by ``gamma * exp(gamma (q12 / r + shift))``, as
    in Neural Tangents. There is no finite-width function.

    Args:
        gamma: exponent scale.
        shift: shift of the normalised covariance.
        do_clip: clip the normalised covariance ``q12 / r`` to ``[-1, 1]``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; ``apply_fn`` raises
        :class:`~bigntk.errors.UnsupportedLayerError`.
    """

    def fn(x: jax.Array) -> jax.Array:
        raise UnsupportedLayerError(
            "ExpNormalized has no finite-width apply_fn (it only defines a kernel, as in "
            "Neural Tangents); use its kernel_fn, or Exp / Rbf for a network function."
        )

    return _layer(fn, "ExpNormalized", _dual.exp_normalized(gamma, shift, do_clip))
