"""linearize and taylor_expand against closed forms; empirical_ntk_vp_fn against the full NTK."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigntk as nt
from tests import models
from tests.test_empirical import to64


def test_linearize_closed_form():
    f = lambda p, x: jnp.sin(p["a"] * x) + p["b"] ** 2  # noqa: E731
    p0 = {"a": jnp.float64(0.3), "b": jnp.float64(-1.2)}
    p = {"a": jnp.float64(0.5), "b": jnp.float64(0.4)}
    x = jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float64)
    f_lin = nt.linearize(f, p0)
    expected = (
        jnp.sin(0.3 * x) + 1.44 + jnp.cos(0.3 * x) * x * (0.5 - 0.3) + 2 * (-1.2) * (0.4 + 1.2)
    )
    np.testing.assert_allclose(f_lin(p, x), expected, rtol=1e-12)
    np.testing.assert_allclose(f_lin(p0, x), f(p0, x), rtol=1e-12)


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4])
def test_taylor_expand_of_exp(degree):
    f = lambda p, x: jnp.exp(p * x)  # noqa: E731
    p0, p, x = 0.2, 0.7, jnp.array([0.5, -1.0, 2.0], jnp.float64)
    expected = sum(
        jnp.exp(p0 * x) * (x * (p - p0)) ** k / math.factorial(k) for k in range(degree + 1)
    )
    got = nt.taylor_expand(f, jnp.float64(p0), degree)(jnp.float64(p), x)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_taylor_expand_is_exact_on_polynomials():
    f = lambda p, x: p[0] ** 3 * x + p[1] * p[0] * x**2  # noqa: E731
    p0 = [jnp.float64(1.5), jnp.float64(-0.5)]
    p = [jnp.float64(-0.7), jnp.float64(2.0)]
    x = jnp.array([0.3, 1.1], jnp.float64)
    np.testing.assert_allclose(nt.taylor_expand(f, p0, 3)(p, x), f(p, x), rtol=1e-12)
    assert not np.allclose(nt.taylor_expand(f, p0, 2)(p, x), f(p, x))


def test_taylor_errors():
    with pytest.raises(ValueError, match="non-negative int"):
        nt.taylor_expand(lambda p, x: p * x, 1.0, -1)
    with pytest.raises(ValueError, match="structure"):
        nt.linearize(lambda p, x: p[0] * x, [1.0])((1.0, 2.0), 1.0)


@pytest.mark.parametrize("x2_given", [True, False])
def test_ntk_vp_matches_full_ntk(x2_given):
    f, params, x1, x2 = models.mlp()
    params, x1, x2 = to64(params), to64(x1), to64(x2)
    x2 = x2 if x2_given else None
    full = nt.empirical_ntk_fn(f, trace_axes=())(x1, x2, params)  # (N1, N2, K, K)
    v = jax.random.normal(jax.random.PRNGKey(4), (3, 3), jnp.float64)  # like f(x2)
    got = nt.empirical_ntk_vp_fn(f, x1, x2, params)(v)
    np.testing.assert_allclose(got, jnp.einsum("ijab,jb->ia", full, v), rtol=1e-10)


def test_ntk_vp_pytree_outputs():
    f, params, x1, x2 = models.pytree_io()
    params, x1, x2 = to64(params), to64(x1), to64(x2)
    out2 = f(params, x2)
    v = jax.tree.map(lambda a: jnp.ones_like(a), out2)
    got = nt.empirical_ntk_vp_fn(f, x1, x2, params)(v)
    assert jax.tree.structure(got) == jax.tree.structure(f(params, x1))
    # <u, Θ v> = <J1ᵀ u, J2ᵀ v>, checked with explicit VJPs
    u = jax.tree.map(lambda a: jnp.full_like(a, 0.5), f(params, x1))
    diff = {k: v for k, v in params.items() if k != "step"}

    def g(d, x):
        return f({**d, "step": params["step"]}, x)

    _, vjp1 = jax.vjp(lambda d: g(d, x1), diff)
    _, vjp2 = jax.vjp(lambda d: g(d, x2), diff)
    lhs = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(got)))
    rhs = sum(
        jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(vjp1(u)[0]), jax.tree.leaves(vjp2(v)[0]))
    )
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10)
