"""Models and data for builder tests (shipped to Ray workers by value)."""

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from bigntk import stax


def mlp(width=32, out=3, features=5, seed=0):
    init_fn, apply_fn, _ = stax.serial(
        stax.Dense(width, b_std=0.1), stax.Relu(), stax.Dense(out, b_std=0.1)
    )
    _, params = init_fn(jax.random.PRNGKey(seed), (-1, features))
    return apply_fn, params


def data(n, features=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, features)).astype(np.float32)


def _sleep_identity(x):
    time.sleep(0.15)
    return x


def slow_mlp_fn(params, x):
    """An MLP whose every call (one per block once compiled) sleeps 0.15 s."""
    x = jax.pure_callback(
        _sleep_identity, jax.ShapeDtypeStruct(x.shape, x.dtype), x, vmap_method="broadcast_all"
    )
    return jnp.tanh(x @ params[0]) @ params[1]


def slow_mlp_params(features=5, width=16, out=2):
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    return (
        np.asarray(jax.random.normal(k1, (features, width))),
        np.asarray(jax.random.normal(k2, (width, out))),
    )


def _scale_host(scale, x):
    return (x * scale).astype(x.dtype)


def host_scaled_mlp(scale):
    """An MLP whose inputs pass through a host callback scaling them by ``scale``.

    The callback's argument is opaque to JAX: only the probe tells two scales apart.
    """

    def f(params, x):
        cb = functools.partial(_scale_host, scale)
        x = jax.pure_callback(
            cb, jax.ShapeDtypeStruct(x.shape, x.dtype), x, vmap_method="broadcast_all"
        )
        return jnp.tanh(x @ params[0]) @ params[1]

    return f


KILL_SENTINEL = 9.5


def _exit_on_sentinel(x):
    if np.any(x == KILL_SENTINEL):
        os._exit(7)  # the worker process dies, as it would from a segfault
    return x


def killing_mlp_fn(params, x):
    """An MLP that kills its process on inputs holding :data:`KILL_SENTINEL`."""
    x = jax.pure_callback(
        _exit_on_sentinel, jax.ShapeDtypeStruct(x.shape, x.dtype), x, vmap_method="broadcast_all"
    )
    return jnp.tanh(x @ params[0]) @ params[1]


def batch_centred_fn(params, x):
    """Mixes examples: each output depends on the batch mean (no block-built kernel)."""
    return jnp.tanh((x - x.mean(axis=0, keepdims=True)) @ params[0]) @ params[1]
