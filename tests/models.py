"""Small plain-JAX models (no bigntk.stax), their parameters and inputs, for oracle tests."""

import jax
import jax.numpy as jnp
from jax import lax


def _keys(seed, n):
    return jax.random.split(jax.random.PRNGKey(seed), n)


def mlp():
    k = _keys(0, 6)
    params = {
        "w1": jax.random.normal(k[0], (4, 6)),
        "b1": jax.random.normal(k[1], (6,)),
        "w2": jax.random.normal(k[2], (6, 3)),
        "b2": jax.random.normal(k[3], (3,)),
    }

    def f(p, x):
        h = jnp.tanh(x @ p["w1"] / 2.0 + p["b1"][None])
        return h @ p["w2"] / jnp.sqrt(6.0) + p["b2"][None]

    return f, params, jax.random.normal(k[4], (3, 4)), jax.random.normal(k[5], (3, 4))


def conv_image_out():
    """Output of shape (N, H, W, C) = (N, 4, 3, 2)."""
    k = _keys(1, 4)
    params = (jax.random.normal(k[0], (3, 3, 2, 3)), jax.random.normal(k[1], (1, 1, 3, 2)))

    def f(p, x):
        dn = ("NHWC", "HWIO", "NHWC")
        h = lax.conv_general_dilated(x, p[0], (1, 1), "SAME", dimension_numbers=dn)
        h = jax.nn.relu(h)
        return lax.conv_general_dilated(h, p[1], (1, 1), "SAME", dimension_numbers=dn)

    return f, params, jax.random.normal(k[2], (2, 4, 3, 2)), jax.random.normal(k[3], (2, 4, 3, 2))


def scalar_out():
    """Output of shape (N,)."""
    k = _keys(2, 4)
    params = [jax.random.normal(k[0], (3, 5)), jax.random.normal(k[1], (5,))]

    def f(p, x):
        return jnp.sin(x @ p[0]) @ p[1]

    return f, params, jax.random.normal(k[2], (4, 3)), jax.random.normal(k[3], (4, 3))


def pytree_io():
    """Dict inputs, a tuple of outputs with different ranks and batch axes at 0."""
    k = _keys(3, 7)
    params = {
        "a": jax.random.normal(k[0], (3, 4)),
        "b": jax.random.normal(k[1], (2, 4)),
        "nested": [jax.random.normal(k[2], (4, 2)), {"scale": jnp.array(0.7)}],
        "step": jnp.array(3),  # an integer leaf: held constant
    }

    def f(p, x):
        h = jnp.tanh(x["u"] @ p["a"] + x["v"] @ p["b"]) * p["step"]
        out = h @ p["nested"][0]
        return {"logits": out, "image": p["nested"][1]["scale"] * h[:, :, None] * out[:, None, :]}

    def inputs(key, n):
        ku, kv = jax.random.split(key)
        return {"u": jax.random.normal(ku, (n, 3)), "v": jax.random.normal(kv, (n, 2))}

    return f, params, inputs(k[3], 3), inputs(k[4], 2)


ALL = {
    "mlp": mlp,
    "conv_image_out": conv_image_out,
    "scalar_out": scalar_out,
    "pytree_io": pytree_io,
}
