"""Tests for bigntk.stax: Neural Tangents-compatible layers and closed-form kernels.

Hard-coded layouts and reference kernel values were read from, and computed
with, neural-tangents 0.6.5 (jax 0.4.25) on CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigntk import stax
from bigntk.errors import LayerArgumentError, UnsupportedLayerError

KEY = jax.random.PRNGKey(0)


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _abstract_init(init_fn, input_shape):
    """``init_fn(KEY, input_shape)`` traced abstractly (no compilation): shapes only."""
    captured = {}

    def init(key):
        captured["output_shape"], params = init_fn(key, input_shape)
        return params

    params = jax.eval_shape(init, KEY)
    return captured["output_shape"], params


# ---------------------------------------------------------------- init/apply shapes

LAYERS = {
    "dense": (stax.Dense(5), (3, 4)),
    "dense_bias_spatial": (stax.Dense(5, b_std=0.1), (2, 3, 4)),
    "dense_channel_axis_1": (stax.Dense(5, b_std=0.1, channel_axis=1), (3, 4, 2)),
    "dense_standard": (stax.Dense(5, parameterization="standard", s=(1, 2)), (3, 4)),
    "conv_valid": (stax.Conv(6, (3, 3)), (2, 9, 8, 3)),
    "conv_same_strided": (stax.Conv(6, (3, 2), (2, 2), "SAME", b_std=0.1), (2, 9, 8, 3)),
    "conv_1d": (stax.Conv(4, (2,), padding="SAME"), (2, 7, 3)),
    "conv_nchw": (stax.Conv(4, (3, 3), dimension_numbers=("NCHW", "OIHW", "NCHW")), (2, 3, 9, 8)),
    "relu": (stax.Relu(), (3, 4)),
    "erf": (stax.Erf(2.0, 0.5, 0.1), (3, 4)),
    "tanh": (stax.Tanh(), (3, 4)),
    "gelu": (stax.Gelu(), (3, 4)),
    "gelu_approx": (stax.Gelu(approximate=True), (2, 5, 4)),
    "identity": (stax.Identity(), (2, 5, 4)),
    "layernorm": (stax.LayerNorm(), (2, 5, 4)),
    "layernorm_axes": (stax.LayerNorm(axis=(1, 2, 3), eps=1e-6), (2, 5, 4, 3)),
    "dropout_test": (stax.Dropout(0.5, mode="test"), (3, 4)),
    "flatten": (stax.Flatten(), (2, 3, 4, 5)),
    "flatten_batch_out": (stax.Flatten(batch_axis_out=1), (2, 3, 4)),
    "avgpool": (stax.AvgPool((2, 2)), (2, 7, 6, 3)),
    "avgpool_same": (stax.AvgPool((3, 3), (2, 2), "SAME"), (2, 7, 6, 3)),
    "avgpool_edges": (stax.AvgPool((3,), padding="SAME", normalize_edges=True), (2, 7, 3)),
    "global_avgpool": (stax.GlobalAvgPool(), (2, 5, 6, 3)),
    "global_avgpool_nchw": (stax.GlobalAvgPool(channel_axis=1), (2, 3, 5, 6)),
    "residual": (
        stax.serial(
            stax.Dense(8),
            stax.FanOut(2),
            stax.parallel(stax.serial(stax.Relu(), stax.Dense(8, b_std=0.1)), stax.Identity()),
            stax.FanInSum(),
            stax.Relu(),
            stax.Dense(3),
        ),
        (4, 5),
    ),
    "concat": (
        stax.serial(
            stax.FanOut(3),
            stax.parallel(stax.Dense(2), stax.Dense(3), stax.Identity()),
            stax.FanInConcat(),
        ),
        (4, 5),
    ),
    "conv_net": (
        stax.serial(
            stax.Conv(8, (3, 3), padding="SAME"),
            stax.Relu(),
            stax.Conv(8, (3, 3), strides=(2, 2)),
            stax.Erf(),
            stax.AvgPool((2, 2)),
            stax.GlobalAvgPool(),
            stax.Dense(10),
        ),
        (2, 12, 11, 3),
    ),
    "conv_resnet": (
        stax.serial(
            stax.Conv(4, (3, 3), padding="SAME"),
            stax.FanOut(2),
            stax.parallel(
                stax.serial(stax.Relu(), stax.Conv(4, (3, 3), padding="SAME")), stax.Identity()
            ),
            stax.FanInSum(),
            stax.LayerNorm(),
            stax.Flatten(),
            stax.Dense(2),
        ),
        (2, 6, 6, 3),
    ),
    "conv_concat_spatial": (
        stax.serial(
            stax.FanOut(2),
            stax.parallel(stax.Conv(3, (2, 2)), stax.Conv(3, (2, 2))),
            stax.FanInConcat(axis=1),
            stax.Gelu(),
            stax.Flatten(),
        ),
        (2, 6, 5, 3),
    ),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_init_shape_matches_apply_shape(name):
    (init_fn, apply_fn, _), input_shape = LAYERS[name]
    output_shape, params = _abstract_init(init_fn, input_shape)
    x = jax.ShapeDtypeStruct(input_shape, jnp.result_type(float))
    out = jax.eval_shape(lambda p, x: apply_fn(p, x, rng=KEY), params, x)
    assert tuple(out.shape) == tuple(output_shape)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_apply_is_differentiable_in_params_and_inputs(name):
    (init_fn, apply_fn, _), input_shape = LAYERS[name]
    _, params = _abstract_init(init_fn, input_shape)
    x = jax.ShapeDtypeStruct(input_shape, jnp.result_type(float))

    def total(p, x):
        return jnp.sum(apply_fn(p, x, rng=KEY))

    grads = jax.eval_shape(jax.grad(total, argnums=(0, 1)), params, x)
    assert jax.tree.structure(grads[0]) == jax.tree.structure(params)
    assert grads[1].shape == input_shape


def test_parallel_shapes_and_containers():
    init_fn, apply_fn, _ = stax.serial(
        stax.FanOut(2), stax.parallel(stax.Dense(3, b_std=0.1), stax.Identity())
    )
    output_shape, params = init_fn(KEY, (2, 4))
    outputs = apply_fn(params, _normal(1, (2, 4)))
    assert output_shape == ((2, 3), (2, 4))
    assert [tuple(o.shape) for o in outputs] == [(2, 3), (2, 4)]
    assert isinstance(params, list) and isinstance(params[1], tuple)
    assert params[0] == () and params[1][1] == ()
    assert isinstance(outputs, list)  # FanOut returns a list; parallel keeps its type


def test_fan_out_returns_lists():
    init_fn, apply_fn, _ = stax.FanOut(3)
    output_shape, params = init_fn(KEY, (2, 4))
    assert output_shape == [(2, 4)] * 3 and params == ()
    assert len(apply_fn((), jnp.ones((2, 4)))) == 3


@pytest.mark.parametrize(
    "layer, in_shape, out_shape",
    [
        (stax.Dense(3), (-1, 4), (-1, 3)),
        (stax.Conv(4, (3, 3)), (-1, 8, 7, 3), (-1, 6, 5, 4)),
        (stax.AvgPool((3,)), (-1, 7, 3), (-1, 5, 3)),
        (stax.Flatten(), (-1, 5, 5, 3), (-1, 75)),
    ],
)
def test_init_accepts_unknown_batch(layer, in_shape, out_shape):
    assert _abstract_init(layer[0], in_shape)[0] == out_shape


# ---------------------------------------------------------------- parameter layouts (NT)


def test_dense_param_layout():
    _, (W, b) = _abstract_init(stax.Dense(5)[0], (3, 4))
    assert W.shape == (4, 5) and b is None
    _, (W, b) = _abstract_init(stax.Dense(5, b_std=0.1)[0], (3, 4))
    assert W.shape == (4, 5) and b.shape == (1, 5)
    _, (W, b) = _abstract_init(stax.Dense(5, b_std=0.1)[0], (2, 3, 4))
    assert b.shape == (1, 1, 5)
    shape, (W, b) = _abstract_init(stax.Dense(5, b_std=0.1, channel_axis=1)[0], (3, 4, 2))
    assert shape == (3, 5, 2) and W.shape == (4, 5) and b.shape == (1, 5, 1)
    standard = stax.Dense(5, parameterization="standard", s=(1, 2))
    shape, (W, _) = _abstract_init(standard[0], (3, 4))
    assert shape == (3, 10) and W.shape == (4, 10)


def test_conv_param_layout():
    shape, (W, b) = _abstract_init(stax.Conv(8, (3, 2))[0], (2, 9, 9, 3))
    assert shape == (2, 7, 8, 8) and W.shape == (3, 2, 3, 8) and b is None
    _, (W, b) = _abstract_init(stax.Conv(8, (3, 2), b_std=0.5)[0], (2, 9, 9, 3))
    assert b.shape == (1, 1, 1, 8)


def test_parameterless_layers_have_empty_params():
    for layer in (
        stax.Relu(),
        stax.Erf(),
        stax.Tanh(),
        stax.Gelu(),
        stax.Identity(),
        stax.Flatten(),
        stax.LayerNorm(),
        stax.Dropout(0.5),
        stax.AvgPool((2,)),
        stax.GlobalAvgPool(),
    ):
        assert layer[0](KEY, (2, 4, 3))[1] == ()


def test_serial_params_and_key_splitting_follow_example_libraries_stax():
    _, params = stax.serial(stax.Dense(5), stax.Relu(), stax.Dense(2, b_std=1.0))[0](KEY, (3, 4))
    assert isinstance(params, list) and len(params) == 3 and params[1] == ()
    _, layer_key = jax.random.split(KEY)
    _, (W, _) = stax.Dense(5)[0](layer_key, (3, 4))
    np.testing.assert_array_equal(params[0][0], W)
    w_key, _ = jax.random.split(layer_key)
    np.testing.assert_array_equal(W, jax.random.normal(w_key, (4, 5)))


# ---------------------------------------------------------------- parameterizations


def test_dense_standard_equals_ntk_with_rescaled_params():
    W_std, b_std, fan_in = 1.7, 0.3, 6
    x = _normal(1, (4, fan_in))
    _, ntk_apply, _ = stax.Dense(5, W_std=W_std, b_std=b_std)
    std_init, std_apply, _ = stax.Dense(5, W_std=W_std, b_std=b_std, parameterization="standard")
    _, (W, b) = stax.Dense(5, W_std=W_std, b_std=b_std)[0](KEY, x.shape)
    std_params = (W * W_std / fan_in**0.5, b * b_std)
    np.testing.assert_allclose(std_apply(std_params, x), ntk_apply((W, b), x), rtol=1e-5)
    _, init_params = std_init(KEY, x.shape)
    np.testing.assert_allclose(init_params[0], std_params[0], rtol=1e-6)
    np.testing.assert_allclose(init_params[1], std_params[1], rtol=1e-6)


def test_conv_standard_equals_ntk_with_rescaled_params():
    W_std, b_std = 1.3, 0.2
    x = _normal(1, (2, 7, 6, 3))
    ntk_init, ntk_apply, _ = stax.Conv(4, (3, 2), padding="SAME", W_std=W_std, b_std=b_std)
    _, std_apply, _ = stax.Conv(
        4, (3, 2), padding="SAME", W_std=W_std, b_std=b_std, parameterization="standard"
    )
    _, (W, b) = ntk_init(KEY, x.shape)
    std_params = (W * W_std / (3 * 3 * 2) ** 0.5, b * b_std)
    np.testing.assert_allclose(std_apply(std_params, x), ntk_apply((W, b), x), rtol=1e-5, atol=1e-6)


def test_invalid_arguments_raise():
    with pytest.raises(LayerArgumentError, match="parameterization"):
        stax.Dense(3, parameterization="mup")
    with pytest.raises(LayerArgumentError, match="padding"):
        stax.Conv(3, (2, 2), padding="same")
    with pytest.raises(LayerArgumentError, match="CIRCULAR"):  # lists the valid paddings
        stax.AvgPool((2, 2), padding="FULL")
    with pytest.raises(LayerArgumentError, match="batch_axis_out"):
        stax.Flatten(batch_axis_out=2)


# ---------------------------------------------------------------- Dropout


def test_dropout_keeps_with_probability_rate_and_rescales():
    rate = 0.8
    _, apply_fn, _ = stax.Dropout(rate)
    x = jnp.ones((200, 50))
    rng = jax.random.PRNGKey(3)
    out = np.asarray(apply_fn((), x, rng=rng))
    kept = out != 0
    assert 0 < kept.mean() < 1 and abs(kept.mean() - rate) < 0.02
    np.testing.assert_allclose(out[kept], 1 / rate, rtol=1e-6)
    np.testing.assert_array_equal(kept, jax.random.bernoulli(rng, rate, x.shape))


def test_dropout_needs_rng_in_train_mode_only():
    x = _normal(1, (3, 4))
    with pytest.raises(LayerArgumentError, match="rng"):
        stax.Dropout(0.5)[1]((), x)
    with pytest.raises(ValueError, match="rng"):  # reached through serial, too
        init_fn, apply_fn, _ = stax.serial(stax.Dense(4), stax.Dropout(0.5))
        apply_fn(init_fn(KEY, x.shape)[1], x)
    np.testing.assert_array_equal(stax.Dropout(0.5, mode="test")[1]((), x), x)


def test_dropout_rng_is_threaded_through_serial():
    init_fn, apply_fn, _ = stax.serial(stax.Dense(64), stax.Dropout(0.5))
    x = _normal(1, (8, 4))
    params = init_fn(KEY, x.shape)[1]
    a = apply_fn(params, x, rng=jax.random.PRNGKey(5))
    b = apply_fn(params, x, rng=jax.random.PRNGKey(6))
    assert bool(jnp.any(a == 0)) and not bool(jnp.all((a == 0) == (b == 0)))


@pytest.mark.parametrize("kwargs", [{"rate": 0.0}, {"rate": 1.5}, {"rate": 0.5, "mode": "eval"}])
def test_dropout_invalid_arguments(kwargs):
    with pytest.raises(LayerArgumentError):
        stax.Dropout(**kwargs)


# ---------------------------------------------------------------- kernel_fn: conventions


def test_kernel_fn_get_variants():
    _, _, kernel_fn = stax.serial(stax.Dense(8, b_std=0.1), stax.Relu(), stax.Dense(1))
    x1, x2 = _normal(1, (4, 3)), _normal(2, (2, 3))
    k = kernel_fn(x1, x2)
    assert isinstance(k, stax.Kernel) and k.nngp.shape == k.ntk.shape == (4, 2)
    np.testing.assert_allclose(kernel_fn(x1, x2, "ntk"), k.ntk, rtol=1e-6)
    np.testing.assert_allclose(kernel_fn(x1, x2, get="NNGP"), k.nngp, rtol=1e-6)
    pair = kernel_fn(x1, x2, ("ntk", "nngp"))
    assert pair._fields == ("ntk", "nngp")
    np.testing.assert_allclose(pair.nngp, k.nngp, rtol=1e-6)
    np.testing.assert_allclose(kernel_fn(x1, None, "nngp"), kernel_fn(x1, x1, "nngp"), rtol=1e-6)
    for bad in ("cov1", ("nngp", "nngp"), ()):
        with pytest.raises(LayerArgumentError):
            kernel_fn(x1, x2, bad)


def test_kernel_fn_is_jittable():
    _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Erf(), stax.Dense(1))
    x1, x2 = _normal(1, (4, 3)), _normal(2, (2, 3))
    jitted = jax.jit(lambda a, b: kernel_fn(a, b, "ntk"))
    np.testing.assert_allclose(jitted(x1, x2), kernel_fn(x1, x2, "ntk"), rtol=1e-5)


def test_input_and_dense_kernels_follow_nt_conventions():
    x1, x2 = _normal(1, (4, 3)), _normal(2, (2, 3))
    nngp0 = x1 @ x2.T / 3
    np.testing.assert_allclose(stax.Identity()[2](x1, x2, "nngp"), nngp0, rtol=1e-6)
    k = stax.Dense(7, W_std=1.5, b_std=0.3)[2](x1, x2)
    np.testing.assert_allclose(k.nngp, 1.5**2 * nngp0 + 0.3**2, rtol=1e-6)
    np.testing.assert_allclose(k.ntk, k.nngp, rtol=1e-6)  # the input NTK is 0


# neural-tangents 0.6.5 on x1 = sin(0.7 * [1..]), x2 = cos(0.3 * [1..]), float64.
NT_REFERENCE = {
    "relu": (
        lambda: stax.serial(
            stax.Dense(64, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, b_std=0.2)
        ),
        (3, 4),
        (2, 4),
        [[0.6334307194, 0.0706164694], [0.0503680286, 0.3733001353], [0.4920646859, 0.0427396171]],
        [[1.1712432568, 0.0006271571], [-0.0413898749, 0.634506657], [0.8071272137, -0.0032861574]],
    ),
    "erf_standard": (
        lambda: stax.serial(
            stax.Dense(64, W_std=1.2, b_std=0.3, parameterization="standard"),
            stax.Erf(0.5, 1.2, 0.1),
            stax.Dense(1, W_std=0.8, parameterization="standard"),
        ),
        (3, 4),
        (2, 4),
        [
            [0.0838272367, -0.0170755914],
            [-0.0451225052, 0.0617880468],
            [0.0619455205, -0.0343949904],
        ],
        [
            [8.7380596771, -1.692473393],
            [-4.5974686255, 6.4425133286],
            [6.4405289602, -3.4718205332],
        ],
    ),
    "spatial_then_flatten": (
        lambda: stax.serial(stax.Dense(64, b_std=0.1), stax.Relu(), stax.Flatten(), stax.Dense(1)),
        (3, 2, 4),
        (2, 2, 4),
        [[0.2087287536, 0.0618280276], [0.1838915282, 0.0322275096], [0.1068631278, 0.0309367572]],
        [[0.3887858324, 0.0807441939], [0.331631053, 0.0083767883], [0.1562764632, -0.0057806938]],
    ),
}


@pytest.mark.parametrize("name", sorted(NT_REFERENCE))
def test_kernel_fn_matches_neural_tangents_reference(name):
    make, shape1, shape2, nngp, ntk = NT_REFERENCE[name]
    x1 = np.sin(np.arange(1, np.prod(shape1) + 1) * 0.7).reshape(shape1)
    x2 = np.cos(np.arange(1, np.prod(shape2) + 1) * 0.3).reshape(shape2)
    with jax.enable_x64(True):
        k = make()[2](jnp.asarray(x1), jnp.asarray(x2))
        np.testing.assert_allclose(k.nngp, nngp, rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(k.ntk, ntk, rtol=1e-8, atol=1e-9)


def test_leading_flatten_equals_flattened_inputs():
    body = (stax.Dense(16, b_std=0.2), stax.Erf(), stax.Dense(1))
    x1, x2 = _normal(1, (4, 2, 3)), _normal(2, (3, 2, 3))
    got = stax.serial(stax.Flatten(), *body)[2](x1, x2)
    want = stax.serial(*body)[2](x1.reshape(4, 6), x2.reshape(3, 6))
    np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-5)
    np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-5)


def test_spatial_outputs_keep_zipped_spatial_axes():
    kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(2))[2]
    x1, x2 = jax.ShapeDtypeStruct((3, 2, 4), "float32"), jax.ShapeDtypeStruct((5, 2, 4), "float32")
    k = jax.eval_shape(kernel_fn, x1, x2)
    assert k.nngp.shape == k.ntk.shape == (3, 5, 2, 2)


def test_nonlinearity_needs_gaussian_inputs():
    x = _normal(1, (3, 4))
    with pytest.raises(ValueError, match="Dense"):
        stax.Relu()[2](x)
    with pytest.raises(ValueError, match="Erf"):
        stax.serial(stax.Dense(4), stax.Relu(), stax.Erf())[2](x)


# ---------------------------------------------------------------- kernel_fn: unsupported

UNSUPPORTED = {
    "Conv": stax.Conv(3, (2, 2)),
    "LayerNorm": stax.LayerNorm(),
    "Dropout": stax.Dropout(0.5),
    "Gelu": stax.Gelu(),
    "Tanh": stax.Tanh(),
    "parallel": stax.parallel(stax.Dense(2), stax.Dense(2)),
    "FanOut": stax.FanOut(2),
    "FanInSum": stax.FanInSum(),
    "FanInConcat": stax.FanInConcat(),
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_kernel_fn_of_unsupported_layer_raises(name):
    x = _normal(1, (2, 4, 4, 3))
    with pytest.raises(NotImplementedError, match=name):
        UNSUPPORTED[name][2](x)
    network = stax.serial(stax.Dense(4), UNSUPPORTED[name], stax.Dense(1))  # builds fine
    with pytest.raises(UnsupportedLayerError, match=name):
        network[2](x)


def test_kernel_fn_rejects_unsupported_axes_and_foreign_layers():
    x = _normal(1, (3, 4, 2))
    with pytest.raises(UnsupportedLayerError, match="channel_axis"):
        stax.Dense(3, channel_axis=1)[2](x)
    foreign = (stax.Relu()[0], stax.Relu()[1], lambda x1, x2=None, get=None: None)
    with pytest.raises(UnsupportedLayerError, match="layer 1"):
        stax.serial(stax.Dense(3), foreign)[2](x)
    with pytest.raises(UnsupportedLayerError, match="mask_constant"):
        stax.Dense(3)[2](x, mask_constant=0.0)


def test_dropout_test_mode_kernel_is_identity():
    x = _normal(1, (3, 4))
    with_dropout = stax.serial(stax.Dense(8), stax.Dropout(0.5, mode="test"), stax.Relu())
    without = stax.serial(stax.Dense(8), stax.Relu())
    np.testing.assert_allclose(with_dropout[2](x, None, "ntk"), without[2](x, None, "ntk"))


# ---------------------------------------------------------------- kernel_fn: Monte Carlo


@pytest.mark.slow
@pytest.mark.parametrize(
    "nonlinearity", [stax.Relu(), stax.Erf(1.5, 0.8, 0.2)], ids=["relu", "erf"]
)
def test_nngp_matches_monte_carlo(nonlinearity):
    width, out_width, n_inits = 512, 256, 256  # standard error ~0.9% of the scale
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(width, W_std=1.5, b_std=0.1),
        nonlinearity,
        stax.Dense(out_width, W_std=1.2, b_std=0.2),
    )
    x1, x2 = _normal(1, (5, 8)), _normal(2, (4, 8))

    def sample(key):
        params = init_fn(key, x1.shape)[1]
        return apply_fn(params, x1) @ apply_fn(params, x2).T / out_width

    samples = jax.lax.map(sample, jax.random.split(KEY, n_inits), batch_size=64)
    nngp = kernel_fn(x1, x2, "nngp")
    scale = float(jnp.max(jnp.abs(nngp)))
    np.testing.assert_allclose(jnp.mean(samples, axis=0), nngp, atol=0.04 * scale)


@pytest.mark.slow
def test_ntk_matches_empirical_ntk_at_width_4096():
    with jax.enable_x64(True):
        init_fn, apply_fn, kernel_fn = stax.serial(
            stax.Dense(4096, b_std=0.1), stax.Relu(), stax.Dense(1)
        )
        x1, x2 = _normal(1, (4, 6)), _normal(2, (3, 6))
        params = init_fn(jax.random.PRNGKey(7), x1.shape)[1]
        assert params[0][0].dtype == jnp.float64

        def jacobian_rows(x):
            jac = jax.jacobian(lambda p: apply_fn(p, x)[:, 0])(params)
            return [leaf.reshape(x.shape[0], -1) for leaf in jax.tree.leaves(jac)]

        empirical = sum(
            j1 @ j2.T for j1, j2 in zip(jacobian_rows(x1), jacobian_rows(x2), strict=True)
        )
        ntk = kernel_fn(x1, x2, "ntk")
        assert ntk.dtype == jnp.float64
        np.testing.assert_allclose(empirical, ntk, atol=0.05 * float(jnp.max(jnp.abs(ntk))))
