"""Polynomial nonlinearities and user-defined ones (params ``()``).

``Polynomial``, ``Monomial``, ``Hermite`` and ``RectifiedMonomial`` have exact
closed forms (:mod:`bigntk.stax._dual`); ``Elementwise`` takes the dual from
the user and ``ElementwiseNumerical`` integrates it by Gauss-Hermite
quadrature. ``apply_fn`` computes the same expression as Neural Tangents.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bigntk.errors import LayerArgumentError, UnsupportedLayerError
from bigntk.stax import _dual
from bigntk.stax._elementwise import _elementwise
from bigntk.stax._layer import Layer

__all__ = [
    "Elementwise",
    "ElementwiseNumerical",
    "Hermite",
    "Monomial",
    "Polynomial",
    "RectifiedMonomial",
]


def _layer(fn: Any, name: str, dual: _dual.Dual | None) -> Layer:
    transform = None if dual is None else functools.partial(_dual.apply, name=name, dual=dual)
    return _elementwise(fn, name, transform)


def _check_degree(layer: str, degree: int) -> None:
    if not isinstance(degree, int | np.integer) or degree < 0:
        raise LayerArgumentError(
            f"expected {layer} degree to be a non-negative integer, got {degree!r} instead."
        )


def Polynomial(coef: Sequence[float]) -> Layer:
    """``coef[0] + coef[1] * x + ... + coef[n] * x**n``.

    Args:
        coef: coefficients, lowest degree first (as
            :class:`numpy.polynomial.Polynomial`).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; ``kernel_fn`` is exact for any
        pre-activation variances.
    """
    coef = np.array(coef)

    def fn(x: jax.Array) -> jax.Array:
        return jnp.polyval(coef[::-1], x)

    return _layer(fn, f"Polynomial({coef.tolist()})", _dual.polynomial(coef.tolist()))


def Monomial(degree: int) -> Layer:
    """``x**degree``.

    Args:
        degree: a non-negative integer (Neural Tangents allows 0 to 5; any
            degree works here).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.
    """
    _check_degree("Monomial", degree)

    def fn(x: jax.Array) -> jax.Array:
        return x**degree

    coef = [0.0] * degree + [1.0]
    return _layer(fn, f"Monomial({degree})", _dual.polynomial(coef))


def RectifiedMonomial(degree: int) -> Layer:
    """``(x >= 0) * x**degree``; degree 1 is ``Relu``, degree 0 the step function.

    Args:
        degree: a non-negative integer.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; ``kernel_fn`` is the arc-cosine
        kernel of that degree (finite on the diagonal, where Neural Tangents
        0.6.5 returns NaN).
    """
    _check_degree("RectifiedMonomial", degree)

    def fn(x: jax.Array) -> jax.Array:
        return (x >= 0) * x**degree

    return _layer(fn, f"RectifiedMonomial({degree})", _dual.rectified_monomial(degree))


def Hermite(degree: int) -> Layer:
    """Normalised probabilists' Hermite polynomial ``He_degree(x) / sqrt(degree!)``.

    Args:
        degree: a non-negative integer.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``. ``kernel_fn`` is the exact
        expectation for any pre-activation variances. Neural Tangents instead
        returns ``q12**degree``, which equals it only for unit variances (its
        docstring asks for inputs with ``std == 1`` across channels); the two
        agree in that case.
    """
    _check_degree("Hermite", degree)
    power_coef = np.polynomial.hermite_e.herme2poly([0] * degree + [1])
    highest_first = power_coef[::-1]
    norm = functools.reduce(operator.mul, range(1, degree + 1), 1) ** 0.5

    def fn(x: jax.Array) -> jax.Array:
        return jnp.polyval(highest_first, x) / norm

    return _layer(fn, f"Hermite({degree})", _dual.polynomial((power_coef / norm).tolist()))


def Elementwise(
    fn: Callable[[float], float] | None = None,
    nngp_fn: Callable[[float, float, float], float] | None = None,
    d_nngp_fn: Callable[[float, float, float], float] | None = None,
) -> Layer:
    """Elementwise ``fn`` with a user-given closed form ``nngp_fn``.

    Args:
        fn: scalar activation ``R -> R``; ``None`` makes ``apply_fn`` raise.
        nngp_fn: ``(cov12, var1, var2) -> E[fn(x1) fn(x2)]`` for centred
            bivariate Gaussian ``(x1, x2)`` with those (co)variances; ``None``
            makes ``kernel_fn`` raise.
        d_nngp_fn: ``(cov12, var1, var2) -> E[fn'(x1) fn'(x2)]`` for the NTK;
            ``None`` means ``jax.grad(nngp_fn)`` (the derivative in ``cov12``).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
        LayerArgumentError: if both ``fn`` and ``nngp_fn`` are ``None``.
    """
    if fn is None and nngp_fn is None:
        raise LayerArgumentError(
            "Elementwise expected fn (for apply_fn) or nngp_fn (for kernel_fn), got "
            "neither; e.g. Elementwise(fn=jnp.tanh) or Elementwise(fn, nngp_fn)."
        )
    name = f"Elementwise({getattr(fn or nngp_fn, '__name__', 'fn')})"

    def apply(x: jax.Array) -> jax.Array:
        if fn is None:
            raise UnsupportedLayerError(
                f"{name} was built without fn, so apply_fn is not defined; pass "
                f"Elementwise(fn=..., nngp_fn=...)."
            )
        return fn(x)

    dual = None if nngp_fn is None else _dual.user(nngp_fn, d_nngp_fn)
    return _layer(apply, name, dual)


def ElementwiseNumerical(
    fn: Callable[[float], float], deg: int, df: Callable[[float], float] | None = None
) -> Layer:
    """Elementwise ``fn`` whose kernels are integrated by Gauss-Hermite quadrature.

    Args:
        fn: scalar activation ``R -> R``.
        deg: quadrature points per dimension (``deg**2`` evaluations per kernel
            entry); ``deg >= 1``. Smooth activations converge fast (try 25);
            kinks (``Relu``, ``Abs``) converge slowly: prefer their closed forms.
        df: derivative of ``fn`` for the NTK; ``None`` means ``jax.grad(fn)``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.
    """
    if not isinstance(deg, int | np.integer) or deg < 1:
        raise LayerArgumentError(
            f"expected ElementwiseNumerical deg to be an integer >= 1, got {deg!r} instead; "
            f"e.g. deg=25."
        )
    derivative = jnp.vectorize(jax.grad(fn)) if df is None else df
    name = f"ElementwiseNumerical({getattr(fn, '__name__', 'fn')}, deg={deg})"
    return _layer(fn, name, _dual.numerical(fn, derivative, deg))
