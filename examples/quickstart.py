"""Neural Tangents' empirical-kernel quick start, with only the imports changed."""

from jax import random

import bigntk as nt
from bigntk import stax

key1, key2, key3 = random.split(random.PRNGKey(1), 3)
x_train = random.normal(key1, (20, 32, 32, 3))
x_test = random.normal(key2, (5, 32, 32, 3))
init_fn, f, _ = stax.serial(
    stax.Conv(32, (3, 3)), stax.Relu(), stax.Conv(32, (3, 3)), stax.Relu(),
    stax.Conv(32, (3, 3)), stax.Flatten(), stax.Dense(10),
)  # fmt: skip
_, params = init_fn(key3, x_train.shape)

kernel_fn = nt.empirical_kernel_fn(
    f, trace_axes=(1,), vmap_axes=0, implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION
)
nt_test_train = kernel_fn(x_test, x_train, "ntk", params)  # (5, 20)
k = nt.empirical_kernel_fn(f, trace_axes=(), vmap_axes=0)(x_test, x_train, None, params)
# k.ntk and k.nngp: (5, 20, 10, 10)
nngp_diag = nt.empirical_nngp_fn(f, diagonal_axes=(0,))(x_train, None, params)  # (20,)

print("ntk test-train:", nt_test_train.shape)
print("ntk, nngp with trace_axes=():", k.ntk.shape, k.nngp.shape)
print("nngp diagonal:", nngp_diag.shape)
