""" "Any JAX function": flax.linen and equinox models against the oracle."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import bigntk as nt
from tests.oracle import oracle
from tests.test_empirical import IMPLEMENTATIONS, assert_kernels_match, to64


class _FlaxCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), param_dtype=jnp.float64)(x)
        x = nn.LayerNorm(param_dtype=jnp.float64)(nn.relu(x))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(3, param_dtype=jnp.float64)(x)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("vmap_axes", [None, 0])
@pytest.mark.parametrize("axes", [((-1,), ()), ((), ()), ((), (0,))])
def test_flax_linen(implementation, vmap_axes, axes):
    model = _FlaxCNN()
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x1 = jax.random.normal(k1, (3, 5, 5, 2), jnp.float64)
    x2 = jax.random.normal(k2, (3, 5, 5, 2), jnp.float64)
    params = model.init(k3, x1)

    def f(p, x):
        return model.apply(p, x)

    got = nt.empirical_kernel_fn(f, *axes, vmap_axes, implementation)(x1, x2, None, params)
    nngp, ntk = oracle(f, params, x1, x2, *axes)
    assert_kernels_match(got.nngp, nngp)
    assert_kernels_match(got.ntk, ntk)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("vmap_axes", [None, 0])
def test_equinox_module_as_params(implementation, vmap_axes):
    """The module itself (with its activation functions as leaves) is ``params``."""
    model = eqx.nn.MLP(4, 2, width_size=8, depth=2, activation=jax.nn.gelu, key=jax.random.key(1))
    model = to64(eqx.filter(model, eqx.is_array)), eqx.filter(model, eqx.is_array, inverse=True)
    model = eqx.combine(*model)
    x1 = jax.random.normal(jax.random.key(2), (4, 4), jnp.float64)
    x2 = jax.random.normal(jax.random.key(3), (3, 4), jnp.float64)

    def f(m, x):
        return jax.vmap(m)(x)

    got = nt.empirical_kernel_fn(f, (), (), vmap_axes, implementation)(x1, x2, None, model)
    params, static = eqx.partition(model, eqx.is_array)
    nngp, ntk = oracle(lambda p, x: f(eqx.combine(p, static), x), params, x1, x2, (), ())
    assert_kernels_match(got.nngp, nngp)
    assert_kernels_match(got.ntk, ntk)
