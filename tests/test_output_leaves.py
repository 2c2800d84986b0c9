"""Output pytrees with None leaves and Python-scalar leaves, for every implementation.

``None`` in ``f``'s output is an empty subtree, as in ``jax.vmap``; a Python float
is a constant scalar output (NTK zero, NNGP its square).
"""

import jax
import numpy as np
import pytest

import bigntk as nt
from tests import models
from tests.oracle import oracle
from tests.test_empirical import assert_kernels_match, to64

ALL_IMPLEMENTATIONS = [
    nt.NtkImplementation.AUTO,
    nt.NtkImplementation.JACOBIAN_CONTRACTION,
    nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
    nt.NtkImplementation.STRUCTURED_DERIVATIVES,
]


def _mlp64():
    f, params, x1, x2 = models.mlp()
    return f, to64(params), to64(x1), to64(x2)


WITH_NONE = {
    "dict": lambda f: lambda p, x: {"a": f(p, x), "b": None},
    "tuple": lambda f: lambda p, x: (f(p, x), None),
    "nested": lambda f: lambda p, x: [None, {"a": f(p, x), "b": (None,)}],
}


@pytest.mark.parametrize("implementation", ALL_IMPLEMENTATIONS)
@pytest.mark.parametrize("vmap_axes", [0, None])  # None: axis 0 is proved and used
@pytest.mark.parametrize("form", sorted(WITH_NONE))
def test_none_output_leaves_are_empty_subtrees(form, vmap_axes, implementation):
    g, params, x1, x2 = _mlp64()
    f = WITH_NONE[form](g)
    kernel_fn = nt.empirical_kernel_fn(f, vmap_axes=vmap_axes, implementation=implementation)
    got = kernel_fn(x1, x2, None, params)
    nngp, ntk = oracle(f, params, x1, x2)
    for kind, want in (("nngp", nngp), ("ntk", ntk)):
        tree = getattr(got, kind)
        # the same structure as f's output, None kept where f has None
        assert str(type(tree)) == str(type(f(params, x1)))
        if form == "dict":
            assert tree["b"] is None
        elif form == "tuple":
            assert tree[1] is None
        else:
            assert tree[0] is None and tree[1]["b"] == (None,)
        assert_kernels_match(tree, want)


@pytest.mark.parametrize("implementation", ALL_IMPLEMENTATIONS)
def test_vmap_out_axes_prefix_over_none_outputs(implementation):
    g, params, x1, x2 = _mlp64()

    def f(p, x):
        return {"a": g(p, x), "b": None}

    _, ntk = oracle(f, params, x1, x2)
    for out_axes in ({"a": 0, "b": None}, {"a": 0, "b": 0}):  # both as jax.vmap accepts
        got = nt.empirical_ntk_fn(f, vmap_axes=(0, out_axes, None), implementation=implementation)(
            x1, x2, params
        )
        assert got["b"] is None
        assert_kernels_match(got, ntk)


@pytest.mark.parametrize("implementation", ALL_IMPLEMENTATIONS)
def test_python_float_outputs(implementation):
    g, params, x1, x2 = _mlp64()

    def constant(p, x):
        return 1.5

    k = nt.empirical_kernel_fn(constant, implementation=implementation)(x1, x2, None, params)
    assert k.ntk.shape == () and k.nngp.shape == ()  # a () output has no axes to keep
    assert float(k.ntk) == 0.0 and float(k.nngp) == 1.5**2

    def mixed(p, x):
        return (g(p, x), 2.0, {"c": 3.0})

    got = nt.empirical_kernel_fn(mixed, implementation=implementation)(x1, x2, None, params)
    nngp, ntk = oracle(mixed, params, x1, x2)
    assert_kernels_match(got.nngp, nngp)
    assert_kernels_match(got.ntk, ntk)
    np.testing.assert_array_equal(got.ntk[1], 0.0)
    np.testing.assert_array_equal(got.nngp[2]["c"], 9.0)
    # and under jax.jit, with x2 = x1
    ntk_fn = nt.empirical_ntk_fn(mixed, implementation=implementation)
    jitted = jax.jit(lambda x, p: ntk_fn(x, None, p))(x1, params)
    _, ntk = oracle(mixed, params, x1, None)
    assert_kernels_match(jitted, ntk)
