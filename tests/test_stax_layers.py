"""The nonlinearities and sum pooling layers of bigntk.stax against real Neural Tangents.

Golden data: tests/data/nt_golden_layers.npz, written by
tools/nt_golden/make_golden_layers.py running NT 0.6.5 on jax 0.4.23 (float64).
Each case is rebuilt with bigntk.stax, loaded with NT's own parameters, and its
outputs, empirical kernels and closed-form kernels are compared. The closed
forms are also checked against wide random networks (Monte Carlo).
"""

from __future__ import annotations

import functools
import inspect
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigntk as nt
from bigntk import stax
from bigntk.errors import LayerArgumentError, UnsupportedLayerError
from bigntk.stax import _dual

GOLDEN = pathlib.Path(__file__).parent / "data" / "nt_golden_layers.npz"
NAMESPACE = {"stax": stax, "jnp": jnp, "jax": jax}  # what the stored definitions use
# NT's closed form differs from bigntk's on purpose (see test_hermite_deviation_from_nt)
DEVIATES = {"hermite2"}
# Empirical kernels: apply_fn is compared exactly for every case above, and the empirical
# kernels of an exact function are tested elsewhere; here cases covering each primitive of
# these layers (min/max, sign, sin, exp, integer_pow, polyval, select, tanh, reduce_window,
# reduce_sum, masks) go through STRUCTURED_DERIVATIVES, whose rules are per primitive, and
# two also through JACOBIAN_CONTRACTION and with x2=None (each run costs compile time).
EMPIRICAL = {"deep_mix", "sign", "polynomial", "rectified_monomial2", "elementwise_numerical"}
EMPIRICAL |= {"sumpool_hidden", "avgpool_hidden", "masked_sumpool", "global_sumpool_nchw"}
EMPIRICAL |= {"avgpool_circular_hidden"}  # wrap padding (pad) between parameters
BOTH_IMPLEMENTATIONS = {"deep_mix", "sumpool_hidden"}
FLOAT32 = {"deep_mix", "gabor", "hermite3_unit", "monomial5", "polynomial", "sumpool_hidden"}
# closed forms with x2=None too (NT computes it exactly as x2=x1)
SELF = {"abrelu", "deep_mix", "sign", "sumpool_inputs", "exp_normalized"}
SELF |= {f"rectified_monomial{degree}" for degree in range(4)}


@functools.cache
def golden():
    data = np.load(GOLDEN)
    return data, json.loads(str(data["meta"]))


def load_case(case, dtype=np.float64):
    data, meta = golden()
    info = meta["cases"][case]
    init_fn, apply_fn, kernel_fn = eval(info["definition"], dict(NAMESPACE))  # our test data
    ours = jax.eval_shape(lambda key: init_fn(key, tuple(info["x1_shape"]))[1], jax.random.key(0))
    treedef = jax.tree.structure(ours)
    assert str(treedef) == info["treedef"], "parameter layout differs from NT"
    leaves = [data[f"{case}/param/{i}"].astype(dtype) for i in range(info["n_param_leaves"])]
    assert [a.shape for a in leaves] == [a.shape for a in jax.tree.leaves(ours)]
    params = jax.tree.unflatten(treedef, leaves)
    if info["mask_constant"] is not None:  # inputs hold the constant at masked positions
        apply_fn = functools.partial(stax.unmask_fn(apply_fn), mask_constant=info["mask_constant"])
    return apply_fn, kernel_fn, params, data[f"{case}/x1"], data[f"{case}/x2"]


def _cases(kind=None):
    _, meta = golden()
    return sorted(c for c, info in meta["cases"].items() if kind is None or kind in info["kinds"])


@pytest.mark.parametrize("case", _cases())
def test_same_function_on_nt_parameters(case):
    data, meta = golden()
    apply_fn, _, params, x1, x2 = load_case(case)
    if "empirical" not in meta["cases"][case]["kinds"]:  # kernel-only layer, as in NT
        with pytest.raises(UnsupportedLayerError, match="no finite-width"):
            apply_fn(params, x1)
        return
    apply_fn = jax.jit(apply_fn)  # one compilation for both batches
    expected = np.concatenate([data[f"{case}/out1"], data[f"{case}/out2"]])
    got = apply_fn(params, np.concatenate([x1, x2]))
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13 * scale)
    if case not in FLOAT32:
        return
    # float32 params and inputs: rounding only (measured up to 4e-7)
    _, _, params32, _, _ = load_case(case, np.float32)
    got = apply_fn(params32, np.concatenate([x1, x2]).astype(np.float32))
    # as in NT (checked on 0.6.5): polyval with float64 numpy coefficients promotes to float64
    assert got.dtype == (np.float64 if case.startswith(("hermite", "poly")) else np.float32)
    assert np.max(np.abs(got - expected)) <= 1e-6 * scale


@pytest.mark.parametrize("case", sorted(EMPIRICAL))
def test_same_empirical_kernels(case):
    data, _ = golden()
    apply_fn, _, params, x1, x2 = load_case(case)
    runs = [(3, "x2", x2)]
    if case in BOTH_IMPLEMENTATIONS:
        runs += [(1, "x2", x2), (1, "self", None)]
    for implementation, mode, second in runs:
        kernel_fn = nt.empirical_kernel_fn(apply_fn, implementation=implementation)
        got = kernel_fn(x1, second, ("nngp", "ntk"), params)
        for kind in ("nngp", "ntk"):
            expected = data[f"{case}/{kind}/{mode}"]
            assert getattr(got, kind).shape == expected.shape
            np.testing.assert_allclose(
                getattr(got, kind),
                expected,
                rtol=1e-10,
                atol=1e-12 * np.abs(expected).max(),
                err_msg=f"{case} {kind} {mode}",
            )


@pytest.mark.parametrize("case", _cases("inf"))
def test_same_closed_form_kernels(case):
    data, meta = golden()
    _, kernel_fn, _, x1, x2 = load_case(case)
    if "Conv(" in meta["cases"][case]["definition"]:  # no closed form for Conv in bigntk
        with pytest.raises(UnsupportedLayerError, match="Conv"):
            kernel_fn(x1, x2)
        return
    if case in DEVIATES:
        pytest.skip("bigntk's closed form differs from NT's on purpose; see the Hermite test")
    modes = (("x2", x2), ("self", None)) if case in SELF else (("x2", x2),)
    for mode, second in modes:
        got = kernel_fn(x1, second)
        for kind in ("nngp", "ntk"):
            expected = data[f"{case}/inf/{kind}/{mode}"]
            ours = np.asarray(getattr(got, kind))
            assert np.isfinite(ours).all()
            compare = np.ones(expected.shape, bool)
            if case.startswith("rectified_monomial") and mode == "self":
                # NT 0.6.5 differentiates arccos at theta = 0 on the diagonal: NaN or
                # wrong there (checked against Relu and Monte Carlo below instead)
                compare = ~np.eye(len(x1), dtype=bool)
            # arctan2 / arccos near cos(theta) = 1 amplifies rounding: rtol 1e-7
            np.testing.assert_allclose(
                ours[compare],
                expected[compare],
                rtol=1e-7,
                atol=1e-12 * np.abs(expected[compare]).max(),
                err_msg=f"{case} {kind} {mode}",
            )


def test_same_signatures_as_nt():
    """Parameter names, order and defaults (``repr``) as recorded from NT 0.6.5."""
    _, meta = golden()
    assert len(meta["signatures"]) == 20
    for name, expected in meta["signatures"].items():
        params = inspect.signature(getattr(stax, name)).parameters.values()
        ours = [[p.name, None if p.default is p.empty else repr(p.default)] for p in params]
        assert ours == expected, name


def test_golden_file_records_nt_rectified_monomial_nans():
    """What the golden file says about NT's diagonal (documented in the README)."""
    _, meta = golden()
    for degree in range(4):
        nans = meta["cases"][f"rectified_monomial{degree}"]["nan_entries"]
        assert set(nans) == {"inf/nngp/self", "inf/ntk/self"}
    assert not any(
        info["nan_entries"]
        for case, info in meta["cases"].items()
        if not case.startswith("rectified_monomial")
    )


def test_hermite_deviation_from_nt():
    """NT returns q12**2 for Hermite(2) whatever the variances; bigntk the expectation.

    ``E[He2(x) He2(y)] / 2 = q12**2 + (q11 - 1)(q22 - 1) / 2``, so after the final
    ``Dense(3, W_std=1.1)`` the two differ by ``1.1**2 (q11 - 1)(q22 - 1) / 2``.
    """
    data, _ = golden()
    _, kernel_fn, _, x1, x2 = load_case("hermite2")
    q11 = 1.3**2 * np.mean(x1**2, axis=1) + 0.2**2  # after Dense(W_std=1.3, b_std=0.2)
    q22 = 1.3**2 * np.mean(x2**2, axis=1) + 0.2**2
    expected = data["hermite2/inf/nngp/x2"] + 1.1**2 * np.outer(q11 - 1, q22 - 1) / 2
    np.testing.assert_allclose(kernel_fn(x1, x2, "nngp"), expected, rtol=1e-12)
    # with unit variances (the hermite3_unit case) both agree: test_same_closed_form_kernels


def test_rectified_monomial_1_is_relu():
    x1 = np.asarray(golden()[0]["rectified_monomial1/x1"])

    def kernel(layer):
        return stax.serial(stax.Dense(8, W_std=1.3, b_std=0.2), layer, stax.Dense(3))[2](x1)

    got, relu = kernel(stax.RectifiedMonomial(1)), kernel(stax.Relu())
    np.testing.assert_allclose(got.nngp, relu.nngp, rtol=1e-12)
    np.testing.assert_allclose(got.ntk, relu.ntk, rtol=1e-12)


def test_user_and_numerical_elementwise_match_closed_forms():
    x1, x2 = _normal(1, (4, 5)), _normal(2, (3, 5))

    def kernel(layer):
        return stax.serial(stax.Dense(8, W_std=1.3, b_std=0.2), layer, stax.Dense(2))[2](x1, x2)

    def erf_nngp(c, v1, v2):
        return jnp.arcsin(2 * c / jnp.sqrt((1 + 2 * v1) * (1 + 2 * v2))) * 2 / jnp.pi

    pairs = [
        (stax.Elementwise(jax.scipy.special.erf, erf_nngp), stax.Erf(), 1e-10),
        (stax.ElementwiseNumerical(jnp.sin, deg=20), stax.Sin(), 1e-8),
        (stax.ElementwiseNumerical(jnp.cos, deg=20, df=lambda x: -jnp.sin(x)), stax.Cos(), 1e-8),
    ]
    for layer, reference, rtol in pairs:
        got, want = kernel(layer), kernel(reference)
        np.testing.assert_allclose(got.nngp, want.nngp, rtol=rtol)
        np.testing.assert_allclose(got.ntk, want.ntk, rtol=rtol)


DUALS = {
    "abrelu": _dual.abrelu(-0.4, 1.3),
    "sign": _dual.sign(),
    "sin": _dual.sin(1.2, 0.7, 0.3),
    "rbf": _dual.rbf(0.6),
    "exp": _dual.exp(0.8, 0.5),
    "gaussian": _dual.gaussian(1.1, -0.6),
    "gabor": _dual.gabor(),
    "polynomial": _dual.polynomial([0.3, -1.0, 0.5, 0.2]),
    "rectified_monomial3": _dual.rectified_monomial(3),
    "numerical": _dual.numerical(jnp.tanh, jax.grad(jnp.tanh), 20),
}


@pytest.mark.parametrize("name", sorted(DUALS))
def test_variance_is_the_kernel_at_equal_inputs(name):
    v = jnp.array([0.0, 0.3, 1.0, 2.5])
    dual = DUALS[name]
    if dual.diag is None:
        pytest.skip("the variance is computed as nngp(v, v, v)")
    np.testing.assert_allclose(dual.diag(v), dual.nngp(v, v, v), rtol=1e-7, atol=1e-12)


# ---------------------------------------------------------------- wide networks

MONTE_CARLO = {  # name: (layer, tolerance of the NNGP, of the NTK; relative to the max)
    # one per closed form in bigntk.stax._dual (Abs / LeakyRelu are ABRelu, Sin is Cos,
    # Monomial is Polynomial), with parameters away from the defaults
    "abrelu": (stax.ABRelu(-0.4, 1.3), 0.02, 0.05),
    "sign": (stax.Sign(), 0.02, 0.05),
    "cos": (stax.Cos(0.9, 1.1, -0.2), 0.02, 0.05),
    "rbf": (stax.Rbf(0.6), 0.02, 0.05),
    "gaussian": (stax.Gaussian(1.1, -0.6), 0.02, 0.05),
    "gabor": (stax.Gabor(), 0.02, 0.05),
    "rectified_monomial0": (stax.RectifiedMonomial(0), 0.02, 0.05),
    # heavier tails: larger Monte Carlo errors (measured up to 2% and 5%)
    "exp": (stax.Exp(0.8, 0.5), 0.05, 0.1),
    "hermite3": (stax.Hermite(3), 0.05, 0.1),  # variances != 1: where NT's formula is off
    "polynomial": (stax.Polynomial([0.3, -1.0, 0.5, 0.2]), 0.05, 0.1),
    "rectified_monomial2": (stax.RectifiedMonomial(2), 0.05, 0.1),
}
NNGP_WIDTH, NTK_WIDTH = 2**19, 2**14


def _normal(seed, shape):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


@functools.cache
def _hidden_layer(width):
    """Pre-activations of a wide ``Dense(width, W_std=1.3, b_std=0.2)``, shared by the tests."""
    dense = stax.Dense(width, W_std=1.3, b_std=0.2)
    x = _normal(1, (5, 4))
    params = dense[0](jax.random.PRNGKey(3), x.shape)[1]
    return x, dense, params


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MONTE_CARLO))
def test_closed_form_is_the_wide_network_limit(name):
    layer, nngp_tol, ntk_tol = MONTE_CARLO[name]
    # NNGP: mean over 2**19 hidden units of phi(z(x1)) phi(z(x2)), diagonal included
    x, dense, params = _hidden_layer(NNGP_WIDTH)
    hidden = layer[1]((), dense[1](params, x))
    empirical = hidden @ hidden.T / NNGP_WIDTH
    exact = stax.serial(dense, layer)[2](x, None, "nngp")
    assert np.max(np.abs(empirical - exact)) < nngp_tol * np.max(np.abs(exact))
    # NTK of the same network with a linear readout, at width 2**14
    x, dense, params = _hidden_layer(NTK_WIDTH)
    readout = stax.Dense(1)
    network = stax.serial(dense, layer, readout)
    all_params = [params, (), readout[0](jax.random.PRNGKey(4), (-1, NTK_WIDTH))[1]]
    empirical = nt.empirical_ntk_fn(network[1], vmap_axes=0, implementation=1)(x, None, all_params)
    exact = network[2](x, None, "ntk")
    assert np.max(np.abs(empirical - exact)) < ntk_tol * np.max(np.abs(exact))


@pytest.mark.slow
def test_sum_pooling_closed_form_is_the_wide_network_limit():
    x = _normal(5, (3, 4, 3, 2))
    width = 2**12
    body = (
        stax.Dense(width, W_std=1.2, b_std=0.1),
        stax.Erf(),
        stax.SumPool((2, 2), (1, 2), "SAME"),
    )
    init_fn, apply_fn, kernel_fn = stax.serial(*body, stax.GlobalSumPool(), stax.Dense(1))
    params = init_fn(jax.random.PRNGKey(1), x.shape)[1]
    # NNGP after SumPool, spatial axes kept: (n1, n2, H, H, W, W)
    pooled = stax.serial(*body)
    out = pooled[1](params[:3], x)  # (3, 4, 2, width)
    empirical = jnp.einsum("nhwc,mHWc->nmhHwW", out, out) / width
    exact = pooled[2](x, None, "nngp")
    assert exact.shape == empirical.shape == (3, 3, 4, 4, 2, 2)
    assert np.max(np.abs(empirical - exact)) < 0.06 * np.max(np.abs(exact))  # measured <= 2%
    # NTK of the whole network, GlobalSumPool and readout included
    empirical = nt.empirical_ntk_fn(apply_fn, vmap_axes=0, implementation=1)(x, None, params)
    exact = kernel_fn(x, None, "ntk")
    assert np.max(np.abs(empirical - exact)) < 0.08 * np.max(np.abs(exact))  # measured <= 3%


# ---------------------------------------------------------------- shapes and errors

SHAPES = {
    "sumpool_same": (stax.SumPool((3, 2), (2, 1), "SAME"), (2, 7, 6, 3)),
    "sumpool_valid_nchw": (stax.SumPool((2, 2), channel_axis=1), (2, 3, 7, 6)),
    "sumpool_1d": (stax.SumPool((2,)), (2, 5, 3)),
    "avgpool_circular_nchw": (
        stax.AvgPool((2, 3), (1, 2), stax.Padding.CIRCULAR, channel_axis=1),
        (2, 3, 5, 6),
    ),
    "global_sumpool": (stax.GlobalSumPool(), (2, 5, 6, 3)),
    "global_sumpool_nchw": (stax.GlobalSumPool(channel_axis=1), (2, 3, 5, 6)),
    "global_sumpool_flat": (stax.GlobalSumPool(), (2, 3)),
    "polynomial": (stax.Polynomial([1.0, 2.0]), (2, 3)),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_init_shape_matches_apply_shape(name):
    (init_fn, apply_fn, _), shape = SHAPES[name]
    output_shape, params = init_fn(jax.random.PRNGKey(0), shape)
    assert params == ()
    assert apply_fn(params, jnp.ones(shape)).shape == tuple(output_shape)
    unknown_batch, _ = init_fn(jax.random.PRNGKey(0), (-1,) + shape[1:])
    assert tuple(unknown_batch) == (-1,) + tuple(output_shape)[1:]


def test_invalid_arguments_raise():
    for make in (
        lambda: stax.Monomial(-1),
        lambda: stax.Monomial(1.5),
        lambda: stax.Hermite(-2),
        lambda: stax.RectifiedMonomial(-1),
        lambda: stax.ElementwiseNumerical(jnp.sin, deg=0),
        lambda: stax.Elementwise(),
        lambda: stax.SumPool((2, 2), strides=(1,)),
        lambda: stax.SumPool((2,), padding="FULL"),
    ):
        with pytest.raises(LayerArgumentError, match="expected"):
            make()
    with pytest.raises(LayerArgumentError, match="spatial axes"):
        stax.SumPool((2, 2))[1]((), jnp.ones((2, 5, 3)))


def test_circular_pooling_wraps_around():
    """Stride one: ``out[i] = sum_k x[(i - lo + k) % n]``, ``lo = (w - 1) // 2`` per axis."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 4, 3))
    window = (3, 2)
    expected = sum(
        np.roll(x, ((window[0] - 1) // 2 - a, (window[1] - 1) // 2 - b), axis=(1, 2))
        for a in range(window[0])
        for b in range(window[1])
    )
    init_fn, sum_pool, _ = stax.SumPool(window, padding="CIRCULAR")
    assert init_fn(None, (-1, 5, 4, 3)) == ((-1, 5, 4, 3), ())  # 'SAME' shape
    avg_pool = stax.AvgPool(window, padding="CIRCULAR", normalize_edges=True)[1]
    np.testing.assert_allclose(sum_pool((), x), expected, rtol=1e-6)
    np.testing.assert_allclose(avg_pool((), x), expected / 6, rtol=1e-6)
    # masks as for 'SAME' (each window's centre); NT 0.6.5 raises on masked CIRCULAR pooling
    x = rng.standard_normal((2, 5, 1))  # one channel: the same mask for every channel
    x[0, 3:] = -10.0
    out = stax.SumPool((2,), padding="CIRCULAR")[1]((), x, mask_constant=-10.0)
    assert out.mask[..., 0].tolist() == [[False] * 3 + [True] * 2, [False] * 5]
    a, b, c = x[0, :3, 0]  # masked positions count as zeros; the window wraps to a
    np.testing.assert_allclose(out.masked_value[0, :, 0], [a + b, b + c, c, 0, a], rtol=1e-6)


def test_layers_without_function_or_kernel_raise():
    x = _normal(1, (3, 4))
    nngp_only = stax.Elementwise(nngp_fn=lambda c, v1, v2: c)
    with pytest.raises(UnsupportedLayerError, match="without fn"):
        nngp_only[1]((), x)
    fn_only = stax.Elementwise(fn=jnp.tanh)
    with pytest.raises(UnsupportedLayerError, match="closed-form"):
        stax.serial(stax.Dense(4), fn_only)[2](x)
    with pytest.raises(UnsupportedLayerError, match="no finite-width"):
        stax.ExpNormalized()[1]((), x)


def test_monomial_beyond_nt_degrees_matches_quadrature():
    """NT allows degrees 0..5; any works here. Gauss-Hermite with 8 points is exact here."""
    x1, x2 = _normal(1, (3, 4)), _normal(2, (2, 4))
    hermite = stax.Hermite(6)
    for layer, numerical in (
        (stax.Monomial(7), stax.ElementwiseNumerical(lambda x: x**7, deg=8)),
        (hermite, stax.ElementwiseNumerical(lambda x: hermite[1]((), x), deg=8)),
    ):
        got = stax.serial(stax.Dense(4, b_std=0.5), layer)[2](x1, x2)
        want = stax.serial(stax.Dense(4, b_std=0.5), numerical)[2](x1, x2)
        np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-9)
        np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-9)


def test_nonlinearities_need_dense_before_them():
    x = _normal(1, (3, 4))
    with pytest.raises(LayerArgumentError, match="Dense"):
        stax.Sin()[2](x)
    with pytest.raises(LayerArgumentError, match="Dense"):
        stax.serial(stax.Dense(4), stax.Abs(), stax.Monomial(2))[2](x)


def test_nonlinearity_after_pooling_activations_raises():
    x = _normal(1, (3, 5, 2))
    after_window = stax.serial(stax.Dense(4), stax.SumPool((2,)), stax.Dense(4), stax.Relu())
    with pytest.raises(UnsupportedLayerError, match="variances"):
        after_window[2](x)
    after_global = stax.serial(stax.Dense(4), stax.GlobalSumPool(), stax.Dense(4), stax.Sin())
    with pytest.raises(UnsupportedLayerError, match="variances"):
        after_global[2](x)
    after_average = stax.serial(stax.Dense(4), stax.AvgPool((3,)), stax.Dense(4), stax.Erf())
    with pytest.raises(UnsupportedLayerError, match="variances"):
        after_average[2](x)
    # pooling the inputs keeps the variances
    on_inputs = stax.serial(stax.SumPool((2,)), stax.Dense(4), stax.Relu(), stax.GlobalSumPool())
    assert on_inputs[2](x, None, "nngp").shape == (3, 3)


def test_pooling_kernel_fn_rejects_other_axes():
    x = _normal(1, (3, 2, 5, 4))
    with pytest.raises(UnsupportedLayerError, match="channel_axis"):
        stax.SumPool((2, 2), channel_axis=1)[2](x)
    with pytest.raises(UnsupportedLayerError, match="channel_axis"):
        stax.GlobalSumPool(channel_axis=1)[2](x)
    with pytest.raises(UnsupportedLayerError, match="channel_axis"):
        stax.AvgPool((2, 2), channel_axis=1)[2](x)
