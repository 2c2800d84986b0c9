"""Closed-form kernels of elementwise nonlinearities ("dual activations").

For an activation ``phi`` and centred Gaussian pre-activations ``(x, y)`` with
variances ``v1``, ``v2`` and covariance ``c``, the infinite-width kernels are

* ``nngp' = E[phi(x) phi(y)]`` (the *dual* of ``phi``),
* ``ntk' = ntk * E[phi'(x) phi'(y)]``, and by Price's theorem
  ``E[phi'(x) phi'(y)] = d E[phi(x) phi(y)] / dc``,
* ``var' = E[phi(x)**2]``.

A :class:`Dual` holds these three functions for one activation; :func:`apply`
propagates a :class:`~bigntk.stax._closed_form.KernelState` through it. The
variances are broadcast against the kernel layout ``(n1, n2, s_1, s_1, ...)``:
``v1`` as ``(n1, 1, s_1, 1, ...)`` and ``v2`` as ``(1, n2, 1, s_1, ...)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bigntk.stax import _closed_form

__all__ = [
    "Dual",
    "abrelu",
    "apply",
    "exp",
    "exp_normalized",
    "gabor",
    "gaussian",
    "numerical",
    "polynomial",
    "rbf",
    "rectified_monomial",
    "sign",
    "sin",
    "user",
]

Array = jax.Array
PairFn = Callable[[Array, Array, Array], Array]


@dataclasses.dataclass(frozen=True)
class Dual:
    """Gaussian expectations of one activation ``phi``.

    Attributes:
        nngp: ``(c, v1, v2) -> E[phi(x) phi(y)]``, elementwise, broadcasting.
        dot: ``(c, v1, v2) -> E[phi'(x) phi'(y)]``; ``None`` means the
            derivative of ``nngp`` with respect to ``c`` (Price's theorem).
        diag: ``v -> E[phi(x)**2]``; ``None`` means ``nngp(v, v, v)``.
    """

    nngp: PairFn
    dot: PairFn | None = None
    diag: Callable[[Array], Array] | None = None


def apply(state: _closed_form.KernelState, name: str, dual: Dual) -> _closed_form.KernelState:
    """Kernel after the activation described by ``dual`` (layer ``name``)."""
    state = _closed_form.require_gaussian(state, name)
    cov = state.nngp
    v1, v2 = _paired_variances(state.var1, state.var2)
    ntk = state.ntk
    if ntk is not None:
        if dual.dot is None:
            _, slope = jax.jvp(lambda c: dual.nngp(c, v1, v2), (cov,), (jnp.ones_like(cov),))
        else:
            slope = dual.dot(cov, v1, v2)
        ntk = ntk * slope
    diag = dual.diag or (lambda v: dual.nngp(v, v, v))
    return dataclasses.replace(
        state,
        nngp=dual.nngp(cov, v1, v2),
        ntk=ntk,
        var1=diag(state.var1),
        var2=diag(state.var2),
        is_gaussian=False,
        source=name,
    )


def _paired_variances(var1: Array, var2: Array) -> tuple[Array, Array]:
    """``var1`` as ``(n1, 1, s_1, 1, ...)`` and ``var2`` as ``(1, n2, 1, s_1, ...)``."""
    shape1 = (var1.shape[0], 1) + tuple(d for s in var1.shape[1:] for d in (s, 1))
    shape2 = (1, var2.shape[0]) + tuple(d for s in var2.shape[1:] for d in (1, s))
    return var1.reshape(shape1), var2.reshape(shape2)


def _angle(cov: Array, v1: Array, v2: Array) -> tuple[Array, Array]:
    """``(sqrt(v1 v2 - c**2), theta)`` with ``cos(theta) = c / sqrt(v1 v2)``; ``pi/2`` at 0/0."""
    root = jnp.sqrt(jnp.maximum(v1 * v2 - cov**2, 0.0))
    theta = jnp.where((root == 0) & (cov == 0), jnp.pi / 2, jnp.arctan2(root, cov))
    return root, theta


# ---------------------------------------------------------------- piecewise linear


def abrelu(a: float, b: float) -> Dual:
    """``a * min(x, 0) + b * max(x, 0)``: arc-cosine kernel of degree 1, rescaled."""
    k = (a - b) ** 2 / (2 * jnp.pi)
    mean_square = (a**2 + b**2) / 2

    def dot(cov: Array, v1: Array, v2: Array) -> Array:
        return mean_square - k * _angle(cov, v1, v2)[1]

    def nngp(cov: Array, v1: Array, v2: Array) -> Array:
        root, theta = _angle(cov, v1, v2)
        return k * root + (mean_square - k * theta) * cov

    return Dual(nngp, dot, lambda v: mean_square * v)


def sign() -> Dual:
    """``sign(x)``: ``1 - 2 theta / pi``; zero NTK (the derivative vanishes a.e.)."""

    def nngp(cov: Array, v1: Array, v2: Array) -> Array:
        return 1 - _angle(cov, v1, v2)[1] * (2 / jnp.pi)

    def dot(cov: Array, v1: Array, v2: Array) -> Array:
        return jnp.zeros_like(nngp(cov, v1, v2))

    return Dual(nngp, dot, lambda v: jnp.where(v == 0, 0.0, 1.0).astype(v.dtype))


# ---------------------------------------------------------------- exponentials


def sin(a: float, b: float, c: float) -> Dual:
    """``a * sin(b * x + c)``, from ``E cos(b (x -+ y)) = exp(-b**2 (v1 + v2 -+ 2 cov) / 2)``."""
    half = a**2 / 2
    cos_2c = math.cos(2 * c)

    def terms(cov: Array, v1: Array, v2: Array) -> tuple[Array, Array]:
        total = v1 + v2
        return jnp.exp(-(b**2) * (total - 2 * cov) / 2), jnp.exp(-(b**2) * (total + 2 * cov) / 2)

    def nngp(cov: Array, v1: Array, v2: Array) -> Array:
        minus, plus = terms(cov, v1, v2)
        return half * (minus - cos_2c * plus)

    def dot(cov: Array, v1: Array, v2: Array) -> Array:
        minus, plus = terms(cov, v1, v2)
        return half * b**2 * (minus + cos_2c * plus)

    return Dual(nngp, dot, lambda v: half * (1 - cos_2c * jnp.exp(-2 * b**2 * v)))


def rbf(gamma: float) -> Dual:
    """``sqrt(2) sin(sqrt(2 gamma) x + pi/4)``: ``exp(-gamma (v1 + v2 - 2 cov))``."""

    def nngp(cov: Array, v1: Array, v2: Array) -> Array:
        return jnp.exp(-gamma * (v1 + v2 - 2 * cov))

    def dot(cov: Array, v1: Array, v2: Array) -> Array:
        return 2 * gamma * nngp(cov, v1, v2)

    return Dual(nngp, dot, jnp.ones_like)


def exp(a: float, b: float) -> Dual:
    """``a * exp(b * x)``: ``a**2 exp(b**2 ((v1 + v2) / 2 + cov))``."""

    def nngp(cov: Array, v1: Array, v2: Array) -> Array:
        return a**2 * jnp.exp(b**2 * ((v1 + v2) / 2 + cov))

    def dot(cov: Array, v1: Array, v2: Array) -> Array:
        return b**2 * nngp(cov, v1, v2)

    return Dual(nngp, dot, lambda v: a**2 * jnp.exp(2 * b**2 * v))


def gaussian(a: float, b: float) -> Dual:
    """``a * exp(b * x**2)``: ``a**2 / sqrt(det(I - 2 b Sigma))``."""

    def det_root(cov: Array, v1: Array, v2: Array) -> Array:
        return jnp.sqrt(jnp.maximum((1 - 2 * b * v1) * (1 - 2 * b * v2) - 4 * b**2 * cov**2, 0.0))

    def nngp(cov: Array, v1: Array, v2: Array) -> Array:
        return a**2 / det_root(cov, v1, v2)

    def dot(cov: Array, v1: Array, v2: Array) -> Array:
        return a**2 * 4 * b**2 * cov / det_root(cov, v1, v2) ** 3

    return Dual(nngp, dot, lambda v: a**2 / jnp.sqrt(1 - 4 * b * v))


def gabor() -> Dual:
    """``exp(-x**2) sin(x)``, from ``E[exp(-|z|**2) cos(w . z)]`` for ``w = (1, -+1)``.

    With ``Sigma = [[v1, c], [c, v2]]``: ``E = det(I + 2 Sigma)**-1/2
    exp(-w' Sigma (I + 2 Sigma)**-1 w / 2)``.
    """

    def nngp(cov: Array, v1: Array, v2: Array) -> Array:
        total, gap = v1 + v2, 4 * (v1 * v2 - cov**2)
        det = 1 + 2 * total + gap
        minus = jnp.exp(-(total + gap - 2 * cov) / (2 * det))
        plus = jnp.exp(-(total + gap + 2 * cov) / (2 * det))
        return (minus - plus) / (2 * jnp.sqrt(det))

    return Dual(nngp)


def exp_normalized(gamma: float, shift: float, do_clip: bool) -> Dual:
    """Neural Tangents' kernel-only ``ExpNormalized``: ``r exp(gamma (c / r + shift))``.

    ``r = sqrt(v1 v2)`` (at least ``1e-15``); the NTK is multiplied by
    ``gamma exp(gamma (c / r + shift))``, as in Neural Tangents.
    """

    def scaled(cov: Array, v1: Array, v2: Array) -> tuple[Array, Array]:
        root = jnp.sqrt(jnp.maximum(v1 * v2, 1e-30))
        ratio = cov / root
        if do_clip:
            ratio = jnp.clip(ratio, -1, 1)
        return root, jnp.exp(gamma * (ratio + shift))

    def nngp(cov: Array, v1: Array, v2: Array) -> Array:
        root, factor = scaled(cov, v1, v2)
        return root * factor

    def dot(cov: Array, v1: Array, v2: Array) -> Array:
        return gamma * scaled(cov, v1, v2)[1]

    return Dual(nngp, dot)


# ---------------------------------------------------------------- polynomials


def polynomial(coef: Sequence[float]) -> Dual:
    """``sum_m coef[m] x**m``, through the Hermite expansion of each ``x**m``.

    With ``x = sqrt(v) u``, ``u ~ N(0, 1)``: ``x**m = sum_i m! / (2**i i! l!)
    v**(m/2) He_l(u)`` over ``l = m - 2i``, and ``E[He_l(u) He_k(w)] = l!
    rho**l`` if ``l == k`` (else 0). Collecting terms, ``E[p(x) p(y)] = sum_l
    l! cov**l B_l(v1) B_l(v2)`` with ``B_l(v) = sum_i coef[l + 2i] (l + 2i)! /
    (2**i i! l!) v**i``: exact for any variances, and free of divisions.
    """
    coef = [float(c) for c in coef]
    degree = len(coef) - 1
    b_coefs = [
        [
            coef[l + 2 * i]
            * math.factorial(l + 2 * i)
            / (2**i * math.factorial(i) * math.factorial(l))
            for i in range((degree - l) // 2 + 1)
        ]
        for l in range(degree + 1)
    ]

    def terms(cov: Array, v1: Array, v2: Array, derivative: bool) -> Array:
        total = jnp.zeros_like(cov * v1 * v2)
        for l, b in enumerate(b_coefs):
            if derivative and l == 0:
                continue
            weight = math.factorial(l) * (l if derivative else 1)
            power = cov ** (l - 1 if derivative else l)
            total = total + weight * power * _horner(b, v1) * _horner(b, v2)
        return total

    return Dual(
        lambda cov, v1, v2: terms(cov, v1, v2, derivative=False),
        lambda cov, v1, v2: terms(cov, v1, v2, derivative=True),
    )


def _horner(coefs: Sequence[float], x: Array) -> Array:
    """``sum_i coefs[i] x**i``."""
    out = jnp.zeros_like(x)
    for c in reversed(coefs):
        out = out * x + c
    return out


def rectified_monomial(degree: int) -> Dual:
    """``(x >= 0) x**degree``: the arc-cosine kernel of that degree (Cho & Saul, 2009).

    ``E = (v1 v2)**(n/2) J_n(theta) / (2 pi)``. Writing ``J_n = P_n(t) sin(theta)
    + (pi - theta) Q_n(t)`` with ``t = cos(theta)``, the recursion ``J_{n+1} =
    (2n+1) cos(theta) J_n - sin(theta) J_n'`` gives ``P_{n+1} = 2n t P_n + (1 -
    t**2) P_n' + Q_n`` and ``Q_{n+1} = (2n+1) t Q_n + (1 - t**2) Q_n'`` from
    ``P_0 = 0``, ``Q_0 = 1``. Both have the parity of their degree, so after
    multiplying by ``(v1 v2)**(n/2)`` they are polynomials in ``cov`` and ``v1
    v2``: no division, finite on the diagonal. The NTK factor is ``n**2`` times
    the degree ``n - 1`` kernel (Price's theorem).
    """
    p_coefs, q_coefs = _arccos_polynomials(degree)

    def kernel(n: int, cov: Array, v1: Array, v2: Array) -> Array:
        root, theta = _angle(cov, v1, v2)
        prod = v1 * v2
        # r**(n-1) P_n(c / r) and r**n Q_n(c / r), with r**2 = v1 v2 (zero terms skipped)
        p_term = sum(
            (p * cov**k * prod ** ((n - 1 - k) // 2) for k, p in enumerate(p_coefs[n]) if p),
            jnp.zeros_like(cov),
        )
        q_term = sum(
            (q * cov**k * prod ** ((n - k) // 2) for k, q in enumerate(q_coefs[n]) if q),
            jnp.zeros_like(cov),
        )
        return (p_term * root + (jnp.pi - theta) * q_term) / (2 * jnp.pi)

    def dot(cov: Array, v1: Array, v2: Array) -> Array:
        if degree == 0:
            return jnp.zeros_like(cov * v1 * v2)
        return degree**2 * kernel(degree - 1, cov, v1, v2)

    diag_factor = float(sum(q_coefs[degree])) / 2  # Q_n(1) / 2 = (2n - 1)!! / 2
    return Dual(
        lambda cov, v1, v2: kernel(degree, cov, v1, v2), dot, lambda v: diag_factor * v**degree
    )


def _arccos_polynomials(degree: int) -> tuple[list[list[int]], list[list[int]]]:
    """Integer coefficients (lowest first) of ``P_n`` and ``Q_n`` for ``n <= degree``."""
    P = np.polynomial.Polynomial
    t, one_minus_t2 = P([0, 1]), P([1, 0, -1])
    ps, qs = [P([0])], [P([1])]
    for n in range(degree):
        p, q = ps[-1], qs[-1]
        ps.append(2 * n * t * p + one_minus_t2 * p.deriv() + q)
        qs.append((2 * n + 1) * t * q + one_minus_t2 * q.deriv())

    def integers(polys: list[np.polynomial.Polynomial]) -> list[list[int]]:
        return [[round(c) for c in poly.coef] for poly in polys]

    return integers(ps), integers(qs)


# ---------------------------------------------------------------- user-given and numerical


def user(nngp_fn: PairFn, d_nngp_fn: PairFn | None) -> Dual:
    """Scalar ``nngp_fn(cov, var1, var2)`` (and derivative) vectorised over the kernel."""
    nngp = jnp.vectorize(nngp_fn)
    dot = jnp.vectorize(jax.grad(nngp_fn) if d_nngp_fn is None else d_nngp_fn)
    return Dual(nngp, dot)


def numerical(fn: Callable[[Array], Array], df: Callable[[Array], Array], deg: int) -> Dual:
    """Gauss-Hermite quadrature with ``deg`` points per dimension.

    With nodes ``t_i`` and weights ``w_i`` for the weight ``exp(-t**2)``:
    ``x_i = sqrt(2 v1) t_i``, ``y_ij = (c / v1) x_i + sqrt(2 (v2 - c**2 / v1))
    t_j`` and ``E[f(x) g(y)] = sum_ij w_i w_j f(x_i) g(y_ij) / pi``.
    """
    nodes, weights = np.polynomial.hermite.hermgauss(deg)

    def integrate(f: Callable[[Array], Array], g: Callable[[Array], Array]) -> PairFn:
        def expectation(cov: Array, v1: Array, v2: Array) -> Array:
            cov, v1, v2 = jnp.broadcast_arrays(cov, v1, v2)
            t = jnp.asarray(nodes, cov.dtype)
            w = jnp.asarray(weights, cov.dtype)
            t_i = t.reshape((deg, 1) + (1,) * cov.ndim)
            t_j = t.reshape((1, deg) + (1,) * cov.ndim)
            safe_v1 = jnp.maximum(v1, 1e-30)[None, None]
            c = cov[None, None]
            x = jnp.sqrt(2 * safe_v1) * t_i
            rest = jnp.sqrt(jnp.maximum(2 * (v2[None, None] - c**2 / safe_v1), 0.0))
            values = f(x) * g(c / safe_v1 * x + rest * t_j)
            return jnp.tensordot(jnp.outer(w, w), values, ((0, 1), (0, 1))) / jnp.pi

        return expectation

    def diag(v: Array) -> Array:
        t = jnp.asarray(nodes, v.dtype).reshape((deg,) + (1,) * v.ndim)
        w = jnp.asarray(weights, v.dtype)
        values = fn(jnp.sqrt(2 * v)[None] * t) ** 2
        return jnp.tensordot(w, values, ((0,), (0,))) / jnp.sqrt(jnp.pi)

    return Dual(integrate(fn, fn), integrate(df, df), diag)
