"""Elementwise nonlinearities: ``Relu``, ``Erf``, ``Tanh``, ``Gelu`` (params ``()``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from bigntk.stax import _closed_form
from bigntk.stax._layer import KernelFn, Layer, Transform
from bigntk.stax._masking import masked

__all__ = ["Erf", "Gelu", "Relu", "Tanh"]


def _elementwise(
    fn: Callable[[jax.Array], jax.Array], name: str, transform: Transform | None
) -> Layer:
    def init_fn(rng: jax.Array, input_shape: Any) -> tuple[Any, tuple[()]]:
        return input_shape, ()

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        return fn(inputs)

    return init_fn, masked(apply_fn), KernelFn(name, transform)


def Relu(do_stabilize: bool = False) -> Layer:
    """ReLU, ``max(x, 0)``.

    Args:
        do_stabilize: accepted for Neural Tangents compatibility; it only
            rescales NT's intermediate kernels for deep networks, and the
            closed form here needs no such rescaling.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; ``kernel_fn`` is the arc-cosine
        kernel.
    """
    del do_stabilize
    return _elementwise(lambda x: jnp.maximum(x, 0), "Relu", _closed_form.relu)


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    """Affine transform of the error function, ``a * erf(b * x) + c``.

    Args:
        a: output scale.
        b: input scale.
        c: output shift.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; ``kernel_fn`` is the arcsine kernel.
    """
    transform = functools.partial(_closed_form.erf, a=a, b=b, c=c)
    return _elementwise(lambda x: a * erf(b * x) + c, f"Erf({a}, {b}, {c})", transform)


def Tanh() -> Layer:
    """Hyperbolic tangent, ``tanh(x)``.

    Neural Tangents' ``stax`` has no ``Tanh`` layer; this one mirrors
    ``jax.example_libraries.stax.Tanh``. It has no closed-form ``kernel_fn``
    (consider ``Erf``, which is close in shape and has one).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; ``kernel_fn`` raises
        :class:`~bigntk.errors.UnsupportedLayerError`.
    """
    return _elementwise(jnp.tanh, "Tanh", None)


def Gelu(approximate: bool = False) -> Layer:
    """Gaussian error linear unit, :func:`jax.nn.gelu`.

    Args:
        approximate: use the ``tanh`` approximation in ``apply_fn``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; ``kernel_fn`` raises
        :class:`~bigntk.errors.UnsupportedLayerError`.
    """
    return _elementwise(lambda x: jax.nn.gelu(x, approximate=approximate), "Gelu", None)
