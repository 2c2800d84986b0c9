"""At large width, bigntk's empirical kernels approach stax's closed-form kernels."""

import jax
import numpy as np
import pytest

import bigntk as nt
from bigntk import stax


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("implementation", [1, 2])
def test_width_4096_dense_relu_matches_closed_form(parameterization, implementation):
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(4096, W_std=1.5, b_std=0.1, parameterization=parameterization),
        stax.Relu(),
        stax.Dense(1, W_std=1.5, b_std=0.1, parameterization=parameterization),
    )
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x1 = jax.random.normal(k1, (6, 8))
    x2 = jax.random.normal(k2, (5, 8))
    ntk_fn = nt.empirical_ntk_fn(apply_fn, vmap_axes=0, implementation=implementation)
    exact = kernel_fn(x1, x2, "ntk")

    def error(k):
        return np.linalg.norm(k - exact) / np.linalg.norm(exact)

    ntks = [ntk_fn(x1, x2, init_fn(k, x1.shape)[1]) for k in jax.random.split(k3, 4)]
    # one network fluctuates by O(1/sqrt(width)) (measured 2-5.5% over seeds at this width);
    # the mean over networks converges to the closed form
    assert max(error(k) for k in ntks) < 0.08
    assert error(np.mean(ntks, axis=0)) < 0.03
    # the NNGP of one network fluctuates as 1/sqrt(outputs), not 1/sqrt(width): no check here


def test_nngp_mean_over_networks_matches_closed_form():
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(256, W_std=1.5, b_std=0.1)
    )
    x1 = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
    nngp_fn = nt.empirical_nngp_fn(apply_fn)
    keys = jax.random.split(jax.random.PRNGKey(2), 16)
    mean = np.mean([nngp_fn(x1, None, init_fn(k, x1.shape)[1]) for k in keys], axis=0)
    exact = kernel_fn(x1, None, "nngp")
    assert np.linalg.norm(mean - exact) / np.linalg.norm(exact) < 0.05
