"""The front door: get, argument errors, dtypes, kwargs splitting and rng, vmap_axes forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigntk as nt
from bigntk.errors import AxisSizeMismatchError
from tests import models
from tests.oracle import oracle
from tests.test_empirical import IMPLEMENTATIONS, assert_kernels_match, to64


@pytest.fixture
def mlp64():
    f, params, x1, x2 = models.mlp()
    return f, to64(params), to64(x1), to64(x2)


# --- get ---------------------------------------------------------------------------------


def test_get_forms(mlp64):
    f, params, x1, x2 = mlp64
    # an explicit implementation: AUTO times each call signature apart, and two of its
    # decisions may differ (implementation or CPU path), which changes the last bit
    kernel_fn = nt.empirical_kernel_fn(f, implementation=1)
    both = kernel_fn(x1, x2, None, params)
    assert type(both).__name__ == "EmpiricalKernel" and both._fields == ("nngp", "ntk")
    np.testing.assert_array_equal(kernel_fn(x1, x2, "ntk", params), both.ntk)
    np.testing.assert_array_equal(kernel_fn(x1, x2, "NNGP", params), both.nngp)
    rev = kernel_fn(x1, x2, ("ntk", "nngp"), params)
    assert rev._fields == ("ntk", "nngp")
    np.testing.assert_array_equal(rev.ntk, both.ntk)
    np.testing.assert_array_equal(kernel_fn(x1, x2, get="ntk", params=params), both.ntk)
    ntk_fn = nt.empirical_ntk_fn(f, implementation=1)
    np.testing.assert_array_equal(ntk_fn(x1, x2, params), both.ntk)
    np.testing.assert_array_equal(nt.empirical_nngp_fn(f)(x1, x2, params), both.nngp)
    auto = nt.empirical_kernel_fn(f)(x1, x2, "ntk", params)  # AUTO: equal to rounding
    np.testing.assert_allclose(auto, both.ntk, rtol=1e-13, atol=0)


@pytest.mark.parametrize("get", [(), ("ntk", "ntk"), "foo", ("nngp", "bar"), 3])
def test_bad_get(mlp64, get):
    f, params, x1, x2 = mlp64
    with pytest.raises((ValueError, TypeError), match="get must be"):
        nt.empirical_kernel_fn(f)(x1, x2, get, params)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("get", [None, "ntk", "nngp", ("ntk",)])
def test_dict_outputs_work_with_every_get(implementation, get):
    f, params, x1, x2 = models.pytree_io()
    params, x1, x2 = to64(params), to64(x1), to64(x2)
    k = nt.empirical_kernel_fn(f, implementation=implementation)(x1, x2, get, params)
    nngp, ntk = oracle(f, params, x1, x2)
    expected = {"nngp": nngp, "ntk": ntk}
    if isinstance(get, str):
        assert set(k) == {"image", "logits"}
        assert_kernels_match(k, expected[get])
    else:
        for kind in get or ("nngp", "ntk"):
            got = getattr(k, kind)
            assert set(got) == {"image", "logits"}
            assert_kernels_match(got, expected[kind])


# --- errors --------------------------------------------------------------------------------


def test_axis_size_mismatch_is_a_clear_value_error(mlp64):
    f, params, x1, _ = mlp64
    x2 = x1[:2]
    for kernel_fn in (
        nt.empirical_kernel_fn(f, diagonal_axes=(0,)),
        nt.empirical_kernel_fn(f, trace_axes=(0, 1)),
        nt.empirical_kernel_fn(f, diagonal_axes=(0,), implementation=2),
    ):
        with pytest.raises(ValueError, match="size is 3 for x1 and 2 for x2") as e:
            kernel_fn(x1, x2, "ntk", params)
        assert isinstance(e.value, AxisSizeMismatchError)


def test_trace_and_diagonal_overlap(mlp64):
    f, params, x1, x2 = mlp64
    with pytest.raises(ValueError, match="both traced and diagonal"):
        nt.empirical_kernel_fn(f, trace_axes=(1,), diagonal_axes=(-1,))(x1, x2, None, params)


def test_axis_out_of_range(mlp64):
    f, params, x1, x2 = mlp64
    with pytest.raises(ValueError, match="only 2 axes"):
        nt.empirical_kernel_fn(f, trace_axes=(2,))(x1, x2, None, params)
    with pytest.raises(TypeError, match="trace_axes must be"):
        nt.empirical_kernel_fn(f, trace_axes="x")


@pytest.mark.parametrize("impl", [0, nt.NtkImplementation.AUTO, "auto", "AUTO"])
def test_auto_is_accepted_in_every_spelling(impl, mlp64):
    f, params, x1, x2 = mlp64
    fn = nt.empirical_ntk_fn(f, implementation=impl)
    expected = nt.empirical_ntk_fn(f, implementation=1)(x1, x2, params)
    np.testing.assert_allclose(fn(x1, x2, params), expected, rtol=1e-10)
    assert fn.plan(x1, x2, params).implementation in (1, 2, 3)


@pytest.mark.parametrize("impl", [4, -1, "fast", 1.5])
def test_unknown_implementations(impl):
    with pytest.raises(ValueError, match="implementation must be one of AUTO"):
        nt.empirical_ntk_fn(lambda p, x: x * p, implementation=impl)


def test_plain_ints_and_names_accepted(mlp64):
    f, params, x1, x2 = mlp64
    a = nt.empirical_ntk_fn(f, implementation=1)(x1, x2, params)
    b = nt.empirical_ntk_fn(f, implementation="ntk_vector_products")(x1, x2, params)
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_missing_params_error(mlp64):
    f, _, x1, x2 = mlp64
    with pytest.raises(TypeError, match=r"kernel_fn\(x1, x2, get, params"):
        nt.empirical_kernel_fn(f)(x1, x2, "ntk")


def test_error_inside_f_is_attributed(mlp64):
    _, params, x1, x2 = mlp64

    def f(p, x):
        return x @ p["w2"]  # wrong shapes

    with pytest.raises(TypeError) as e:
        nt.empirical_ntk_fn(f)(x1, x2, params)
    assert any("bigntk" in note for note in getattr(e.value, "__notes__", []))


# --- dtypes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "param_dtype,input_dtype,expected",
    [
        (jnp.float32, jnp.float32, jnp.float32),
        (jnp.float32, jnp.float64, jnp.float64),
        (jnp.float64, jnp.float32, jnp.float64),
        (jnp.float64, jnp.float64, jnp.float64),
    ],
)
def test_every_implementation_returns_the_same_dtype(param_dtype, input_dtype, expected):
    f, params, x1, x2 = models.mlp()
    params = jax.tree.map(lambda a: a.astype(param_dtype), params)
    x1, x2 = x1.astype(input_dtype), x2.astype(input_dtype)
    for impl in IMPLEMENTATIONS:
        for vmap_axes in (None, 0):
            with jax.numpy_dtype_promotion("standard"):
                k = nt.empirical_kernel_fn(f, vmap_axes=vmap_axes, implementation=impl)(
                    x1, x2, None, params
                )
            assert k.ntk.dtype == expected, (impl, vmap_axes)
            assert k.nngp.dtype == jnp.result_type(f(params, x1))


def test_no_differentiable_params_gives_zero_ntk():
    f = lambda p, x: x * p["n"]  # noqa: E731
    params = {"n": jnp.array(2, jnp.int32)}
    x = jnp.ones((3, 2))
    for impl in IMPLEMENTATIONS:
        k = nt.empirical_kernel_fn(f, implementation=impl)(x, None, None, params)
        np.testing.assert_array_equal(k.ntk, np.zeros((3, 3)))
        np.testing.assert_allclose(k.nngp, np.full((3, 3), 4.0))


# --- kwargs --------------------------------------------------------------------------------


def _f_with_kwargs(p, x, scale, shift, train=True):
    h = jnp.tanh(x @ p["w1"] * scale + shift) @ p["w2"]
    return h if train else -h


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("x2_given", [True, False])
def test_two_tuples_are_split_and_others_shared(mlp64, implementation, x2_given):
    _, params, x1, x2 = mlp64
    x2 = x2 if x2_given else None
    scale = (jnp.float64(0.5), jnp.float64(2.0))
    kernel_fn = nt.empirical_kernel_fn(_f_with_kwargs, implementation=implementation)
    got = kernel_fn(x1, x2, None, params, scale=scale, shift=jnp.float64(0.3), train=False)
    kw1 = {"scale": 0.5, "shift": 0.3, "train": False}
    kw2 = {"scale": 2.0, "shift": 0.3, "train": False}
    nngp, ntk = oracle(_f_with_kwargs, params, x1, x2, kw1=kw1, kw2=kw2)
    assert_kernels_match(got.nngp, nngp)
    assert_kernels_match(got.ntk, ntk)


def _dropout_f(p, x, rng):
    h = x @ p["w1"]
    keep = jax.random.bernoulli(rng, 0.5, h.shape)
    return jnp.where(keep, h / 0.5, 0.0) @ p["w2"]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_rng_same_key_for_same_inputs(mlp64, implementation):
    _, params, x1, x2 = mlp64
    key = jax.random.PRNGKey(7)
    kernel_fn = nt.empirical_kernel_fn(_dropout_f, implementation=implementation)
    k_none = kernel_fn(x1, None, None, params, rng=key)
    k_same = kernel_fn(x1, x1, None, params, rng=key)
    for a, b in zip(k_none, k_same):
        np.testing.assert_allclose(a, b, rtol=1e-12)
        np.testing.assert_allclose(a, a.T, rtol=1e-12)
    nngp, ntk = oracle(_dropout_f, params, x1, None, kw1={"rng": key})
    assert_kernels_match(k_none.ntk, ntk)
    # different inputs: x2's call gets fold_in(key, 1)
    k_diff = kernel_fn(x1, x2, None, params, rng=key)
    nngp, ntk = oracle(
        _dropout_f, params, x1, x2, kw1={"rng": key}, kw2={"rng": jax.random.fold_in(key, 1)}
    )
    assert_kernels_match(k_diff.nngp, nngp)
    assert_kernels_match(k_diff.ntk, ntk)


def test_rng_rule_holds_under_jit(mlp64):
    _, params, x1, x2 = mlp64
    key = jax.random.PRNGKey(3)
    kernel_fn = jax.jit(nt.empirical_kernel_fn(_dropout_f), static_argnums=2)
    same = kernel_fn(x1, x1, "ntk", params, rng=key)
    np.testing.assert_allclose(same, same.T, rtol=1e-12)
    _, ntk = oracle(
        _dropout_f, params, x1, x2, kw1={"rng": key}, kw2={"rng": jax.random.fold_in(key, 1)}
    )
    assert_kernels_match(kernel_fn(x1, x2, "ntk", params, rng=key), ntk)


def test_typed_keys(mlp64):
    _, params, x1, x2 = mlp64
    key = jax.random.key(5)
    k = nt.empirical_ntk_fn(_dropout_f)(x1, x2, params, rng=key)
    _, ntk = oracle(
        _dropout_f, params, x1, x2, kw1={"rng": key}, kw2={"rng": jax.random.fold_in(key, 1)}
    )
    assert_kernels_match(k, ntk)


# --- vmap_axes forms -----------------------------------------------------------------------


def _transposed_f(p, x):
    """Input (d, N), output (k, N): batch axis 1 on both sides."""
    return (jnp.tanh(x.T @ p["w1"]) @ p["w2"]).T


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "vmap_axes", [1, -1, (1, 1, {}), (1, -1, None)], ids=["int", "negative", "triple", "mixed"]
)
def test_vmap_axes_nonzero_batch_axis(mlp64, implementation, vmap_axes):
    _, params, x1, x2 = mlp64
    x1, x2 = x1.T, x2.T
    for axes in (((0,), ()), ((), ()), ((), (1,))):
        kernel_fn = nt.empirical_kernel_fn(_transposed_f, *axes, vmap_axes, implementation)
        x2_ = x2 if axes[1] != (1,) else None
        got = kernel_fn(x1, x2_, None, params)
        nngp, ntk = oracle(_transposed_f, params, x1, x2_, *axes)
        assert_kernels_match(got.ntk, ntk)
        assert_kernels_match(got.nngp, nngp)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "vmap_axes",
    [
        ({"u": 0, "v": 0}, {"logits": 0, "image": 0}, {}),
        (0, {"logits": 0, "image": 0}, None),
        ({"u": 0, "v": None}, 0, {}),  # v is not batched: one v shared by every example
    ],
    ids=["pytrees", "int-in-pytree-out", "unbatched-leaf"],
)
def test_vmap_axes_pytrees_and_unbatched_leaves(implementation, vmap_axes):
    f, params, x1, x2 = models.pytree_io()
    params, x1, x2 = to64(params), to64(x1), to64(x2)
    if vmap_axes[0] != 0 and vmap_axes[0]["v"] is None:
        shared_v = x1["v"][:1]  # (1, 2), broadcast against every example
        x1, x2 = {**x1, "v": shared_v}, {**x2, "v": shared_v}
    reference = nt.empirical_kernel_fn(f, implementation=implementation)(x1, x2, None, params)
    got = nt.empirical_kernel_fn(f, vmap_axes=vmap_axes, implementation=implementation)(
        x1, x2, None, params
    )
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_vmap_axes_batched_and_unbatched_kwargs(mlp64, implementation):
    _, params, x1, x2 = mlp64

    def f(p, x, shift, scale):
        return jnp.tanh(x @ p["w1"] * scale + shift) @ p["w2"]

    shift = jax.random.normal(jax.random.PRNGKey(9), (3, 6))  # per example
    scale = jnp.float64(0.7)  # shared
    reference = nt.empirical_kernel_fn(f, implementation=implementation)(
        x1, x2, None, params, shift=shift, scale=scale
    )
    got = nt.empirical_kernel_fn(f, vmap_axes=(0, 0, {"shift": 0}), implementation=implementation)(
        x1, x2, None, params, shift=shift, scale=scale
    )
    for a, b in zip(got, reference):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_vmap_axes_errors(mlp64):
    f, params, x1, x2 = mlp64
    with pytest.raises(TypeError, match="kwargs_axes"):
        nt.empirical_kernel_fn(f, vmap_axes=(0, 0, "x"))
    with pytest.raises(ValueError, match="batch axis 5"):
        nt.empirical_kernel_fn(f, vmap_axes=(0, 5, {}))(x1, x2, "ntk", params)
