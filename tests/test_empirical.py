"""Every NTK implementation and the NNGP against the float64 oracle."""

import itertools
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigntk as nt
from tests import models
from tests.conftest import XLA_O0
from tests.oracle import oracle

IMPLEMENTATIONS = [
    nt.NtkImplementation.JACOBIAN_CONTRACTION,
    nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
    nt.NtkImplementation.STRUCTURED_DERIVATIVES,
]


def assert_kernels_match(got, expected, rtol=1e-9, atol=1e-9):
    got = jax.tree.leaves(got)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(np.asarray(g), e, rtol=rtol, atol=atol)


def to64(tree):
    return jax.tree.map(
        lambda v: v.astype(jnp.float64) if jnp.issubdtype(v.dtype, jnp.floating) else v, tree
    )


@pytest.mark.parametrize("model", sorted(models.ALL))
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("vmap_axes", [None, 0])
@pytest.mark.parametrize("x2_given", [True, False])
@pytest.mark.parametrize("axes", [((-1,), ()), ((), ()), ((), (0,)), ((0,), ())])
def test_models_against_oracle(model, implementation, vmap_axes, x2_given, axes):
    f, params, x1, x2 = models.ALL[model]()
    params, x1, x2 = to64(params), to64(x1), to64(x2)
    trace_axes, diagonal_axes = axes
    if (0 in trace_axes or 0 in diagonal_axes) and x2_given:
        x2 = jax.tree.map(lambda a: a[::-1] * 0.5, x1)  # same count, other values
    x2 = x2 if x2_given else None
    kernel_fn = nt.empirical_kernel_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation)
    got = kernel_fn(x1, x2, None, params)
    nngp, ntk = oracle(f, params, x1, x2, trace_axes, diagonal_axes)
    assert_kernels_match(got.nngp, nngp)
    assert_kernels_match(got.ntk, ntk)


_AT_XLA_DEFAULTS = textwrap.dedent(
    """
    import os
    import tests.conftest  # x64 and strict ranks; BIGNTK_TEST_XLA_DEFAULTS=1: no -O0
    assert "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")
    import bigntk as nt
    from tests import models
    from tests.oracle import oracle
    from tests.test_empirical import IMPLEMENTATIONS, assert_kernels_match, to64

    # a convolution (XLA's own kernels) and a pytree of dense layers (YNNPACK's)
    for name in ("conv_image_out", "pytree_io"):
        f, params, x1, x2 = models.ALL[name]()
        params, x1, x2 = to64(params), to64(x1), to64(x2)
        nngp, ntk = oracle(f, params, x1, x2)
        for implementation, vmap_axes in zip(IMPLEMENTATIONS, (None, 0, None)):
            kernel_fn = nt.empirical_kernel_fn(f, (-1,), (), vmap_axes, implementation)
            got = kernel_fn(x1, x2, None, params)
            assert_kernels_match(got.nngp, nngp)
            assert_kernels_match(got.ntk, ntk)
            print(name, implementation.name, vmap_axes, "ok")
    """
)


def test_every_implementation_at_xla_default_optimisation():
    """The suite compiles at LLVM -O0 (tests/conftest.py); users' programs at XLA's
    defaults: every implementation against the oracle there too, in a fresh process."""
    env = {**os.environ, "BIGNTK_TEST_XLA_DEFAULTS": "1", "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(XLA_O0, "")
    root = pathlib.Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", _AT_XLA_DEFAULTS], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count(" ok") == 2 * len(IMPLEMENTATIONS), run.stdout


def _disjoint_axis_pairs(ndim):
    """Every (trace_axes, diagonal_axes) with disjoint axes: 3**ndim pairs."""
    for roles in itertools.product("tdk", repeat=ndim):
        yield (
            tuple(k for k, r in enumerate(roles) if r == "t"),
            tuple(k for k, r in enumerate(roles) if r == "d"),
        )


@pytest.mark.parametrize("axes", list(_disjoint_axis_pairs(4)), ids=str)
@pytest.mark.parametrize(
    "implementation,vmap_axes",
    [(IMPLEMENTATIONS[0], None), (IMPLEMENTATIONS[1], 0), (IMPLEMENTATIONS[2], None)],
)
def test_every_trace_and_diagonal_combination_on_nhwc(axes, implementation, vmap_axes):
    f, params, x1, x2 = models.conv_image_out()
    params, x1, x2 = to64(params), to64(x1), to64(x2)
    trace_axes, diagonal_axes = axes
    kernel_fn = nt.empirical_kernel_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation)
    got = kernel_fn(x1, x2, None, params)
    nngp, ntk = oracle(f, params, x1, x2, trace_axes, diagonal_axes)
    assert_kernels_match(got.nngp, nngp)
    assert_kernels_match(got.ntk, ntk)


@pytest.mark.parametrize(
    "trace_axes,diagonal_axes,shape",
    [
        ((-1,), (), (3, 2, 4, 4, 3, 3)),
        ((), (), (3, 2, 4, 4, 3, 3, 2, 2)),
        ((-1,), (0,), (3, 4, 4, 3, 3)),
        ((), (1,), (3, 2, 4, 3, 3, 2, 2)),
        ((1, 2), (3,), (3, 2, 2)),
        ((0,), (), (4, 4, 3, 3, 2, 2)),
    ],
)
def test_nhwc_shapes(trace_axes, diagonal_axes, shape):
    f, params, x1, _ = models.conv_image_out()
    x1 = jnp.concatenate([x1, x1[:1]])  # N1 = 3
    x2 = x1 if (0 in trace_axes or 0 in diagonal_axes) else x1[:2]
    k = nt.empirical_kernel_fn(f, trace_axes, diagonal_axes)(x1, x2, None, params)
    assert k.ntk.shape == shape and k.nngp.shape == shape


def _stax_nets():
    from bigntk import stax

    return {
        "dense_erf": (
            stax.serial(stax.Dense(8, b_std=0.1), stax.Erf(), stax.Dense(3, W_std=1.5)),
            (3, 5),
        ),
        "residual_layernorm": (
            stax.serial(
                stax.Dense(8),
                stax.FanOut(2),
                stax.parallel(stax.serial(stax.Relu(), stax.Dense(8, b_std=0.2)), stax.Identity()),
                stax.FanInSum(),
                stax.LayerNorm(),
                stax.Gelu(),
                stax.Dense(2),
            ),
            (3, 4),
        ),
        "conv_pool": (
            stax.serial(
                stax.Conv(4, (3, 3), strides=(2, 2), padding="SAME", b_std=0.1),
                stax.Tanh(),
                stax.AvgPool((2, 2)),
                stax.Conv(3, (2, 2)),
                stax.Relu(),
                stax.GlobalAvgPool(),
                stax.Dense(2),
            ),
            (3, 9, 9, 2),
        ),
        "concat_flatten": (
            stax.serial(
                stax.Conv(3, (2, 2), padding="SAME"),
                stax.FanOut(2),
                stax.parallel(stax.Identity(), stax.Conv(2, (1, 1))),
                stax.FanInConcat(),
                stax.Flatten(),
                stax.Dense(2),
            ),
            (3, 4, 4, 1),
        ),
    }


@pytest.mark.parametrize("net", ["dense_erf", "residual_layernorm", "conv_pool", "concat_flatten"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("vmap_axes", [None, 0])
def test_stax_networks_against_oracle(net, implementation, vmap_axes):
    (init_fn, f, _), shape = _stax_nets()[net]
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
    x1 = jax.random.normal(k1, shape, jnp.float64)
    x2 = jax.random.normal(k2, shape, jnp.float64)
    _, params = init_fn(k3, shape)
    params = to64(params)
    for axes in (((-1,), ()), ((), ())):
        got = nt.empirical_kernel_fn(f, *axes, vmap_axes, implementation)(x1, x2, None, params)
        nngp, ntk = oracle(f, params, x1, x2, *axes)
        assert_kernels_match(got.nngp, nngp)
        assert_kernels_match(got.ntk, ntk)
