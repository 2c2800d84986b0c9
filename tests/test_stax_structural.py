"""bigntk.stax's structural layers give the same numbers as Neural Tangents 0.6.5.

Golden data: tests/data/nt_golden_structural.npz, written by
tools/nt_golden/make_golden_structural.py running the real NT on jax 0.4.23.
Each case is rebuilt with bigntk.stax from the same definition string, loaded
with NT's stored params (the pytree layouts must print the same), and its
outputs and empirical NNGP / NTK are recomputed.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigntk as nt
from bigntk import stax
from bigntk.errors import LayerArgumentError, UnsupportedLayerError

GOLDEN = pathlib.Path(__file__).parent / "data" / "nt_golden_structural.npz"


@functools.cache
def golden():
    data = np.load(GOLDEN)
    return data, json.loads(str(data["meta"]))


def load_case(case):
    """``(f, params, x1, x2, kwargs1, kwargs2)`` for a golden case, with NT's params."""
    data, meta = golden()
    info = meta["cases"][case]
    init_fn, apply_fn, kernel_fn = eval(info["definition"], {"stax": stax, "jnp": jnp, "np": np})
    x1, x2 = data[f"{case}/x1"], data[f"{case}/x2"]
    _, ours = jax.eval_shape(lambda k: init_fn(k, x1.shape), jax.random.PRNGKey(0))
    treedef = jax.tree.structure(ours)
    assert str(treedef) == str(data[f"{case}/treedef"]), "parameter layout differs from NT"
    leaves = [data[f"{case}/param/{i}"] for i in range(info["n_param_leaves"])]
    assert [a.shape for a in leaves] == [tuple(a.shape) for a in jax.tree.leaves(ours)]
    params = jax.tree.unflatten(treedef, leaves)
    kw1 = {n: data[f"{case}/kwarg/{n}/1"] for n in info["kwargs"]}
    kw2 = {n: data[f"{case}/kwarg/{n}/2"] for n in info["kwargs"]}
    f = apply_fn
    if info["mask_constant"] is not None:
        f = stax.unmask_fn(apply_fn)
        kw1["mask_constant"] = kw2["mask_constant"] = info["mask_constant"]
    return f, kernel_fn, params, x1, x2, kw1, kw2


def _cases():
    return sorted(golden()[1]["cases"])


def _check(got, expected, what):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12 * scale, err_msg=what)


@pytest.mark.parametrize("case", _cases())
def test_same_outputs_and_empirical_kernels(case):
    """NT's outputs and empirical NNGP / NTK of (x1, x2), from NT's params."""
    data, meta = golden()
    f, _, params, x1, x2, kw1, kw2 = load_case(case)
    apply = jax.jit(lambda p, x, kw: f(p, x, **kw))
    # outputs on x1 (those on x2 enter the x1-x2 kernels below)
    _check(apply(params, x1, kw1), data[f"{case}/out1"], f"{case} out1")
    if meta["cases"][case]["mask_constant"] is not None:
        # the golden data depends on the mask: a constant that never occurs changes it
        unmasked = apply(params, x1, dict(kw1, mask_constant=1e300))
        assert not np.allclose(unmasked, data[f"{case}/out1"])
    split = {n: (kw1[n], kw2[n]) for n in kw1}
    kernel_fn = nt.empirical_kernel_fn(f, implementation=1)
    got = kernel_fn(x1, x2, ("nngp", "ntk"), params, **split)
    for kind in ("nngp", "ntk"):
        _check(getattr(got, kind), data[f"{case}/{kind}/x2"], f"{case} {kind}")


def test_same_empirical_kernels_x2_none():
    data, _ = golden()
    case = "masked_conv"
    f, _, params, x1, _, kw1, _ = load_case(case)
    got = nt.empirical_kernel_fn(f, implementation=1)(x1, None, ("nngp", "ntk"), params, **kw1)
    for kind in ("nngp", "ntk"):
        _check(getattr(got, kind), data[f"{case}/{kind}/self"], f"{case} {kind} self")


@pytest.mark.parametrize("case", [c for c in _cases() if c != "repeat"])
def test_no_closed_form(case):
    _, kernel_fn, _, x1, x2, _, _ = load_case(case)
    with pytest.raises(UnsupportedLayerError, match="no closed-form kernel_fn"):
        kernel_fn(x1, x2, "ntk")


def test_repeat_closed_form_is_serial_closed_form():
    block = stax.serial(stax.Relu(), stax.Dense(5, W_std=1.2, b_std=0.1))
    x1, x2 = _normal(0, (3, 4)), _normal(1, (2, 4))
    _, _, repeated = stax.serial(stax.Dense(5), stax.repeat(block, 3), stax.Relu(), stax.Dense(2))
    _, _, unrolled = stax.serial(stax.Dense(5), block, block, block, stax.Relu(), stax.Dense(2))
    _, _, shorter = stax.serial(stax.Dense(5), block, block, stax.Relu(), stax.Dense(2))
    got, expected = repeated(x1, x2), unrolled(x1, x2)
    np.testing.assert_allclose(got.ntk, expected.ntk, rtol=1e-12)
    np.testing.assert_allclose(got.nngp, expected.nngp, rtol=1e-12)
    assert not np.allclose(got.ntk, shorter(x1, x2).ntk)


def _normal(seed, shape):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


# ---------------------------------------------------------------- shapes and errors

NEW_LAYERS = {
    "conv_circular": (stax.Conv(3, (3, 2), (2, 1), "CIRCULAR"), (2, 5, 4, 2)),
    "conv_transpose": (stax.ConvTranspose(3, (3, 2), (2, 2), "SAME", b_std=0.1), (2, 3, 4, 2)),
    "conv_transpose_circular": (stax.ConvTranspose(3, (3, 3), (2, 1), "CIRCULAR"), (2, 3, 4, 2)),
    "conv_local": (stax.ConvLocal(3, (2, 2), (1, 2), "SAME", b_std=0.1), (2, 4, 5, 2)),
    "dot_general": (stax.DotGeneral(rhs=2.0), (2, 3)),
    "dot_general_identity": (stax.DotGeneral(), (2, 3)),
    "index": (stax.Index(stax.Slice[:, 1:, ..., ::-1]), (2, 4, 3, 2)),
    "image_resize": (stax.ImageResize((-1, 5, 2, -1), "linear"), (2, 3, 4, 2)),
    "aggregate": (stax.Aggregate(), (2, 3, 2)),
    "attention": (stax.GlobalSelfAttention(4, 3, 2, 2, pos_emb_type="SUM"), (2, 3, 2)),
    "repeat": (stax.repeat(stax.serial(stax.Dense(3), stax.Relu()), 2), (2, 3)),
    "fan_in_prod": (stax.serial(stax.FanOut(2), stax.FanInProd()), (2, 3)),
}


@pytest.mark.parametrize("name", sorted(NEW_LAYERS))
def test_init_shape_matches_apply_shape_with_unknown_batch(name):
    (init_fn, apply_fn, _), input_shape = NEW_LAYERS[name]
    shapes = {}

    def init(key, input_shape):
        shapes[input_shape], params = init_fn(key, input_shape)
        return params

    params = jax.eval_shape(lambda key: init(key, input_shape), KEY)
    out = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct(input_shape, jnp.float64))
    assert tuple(out.shape) == tuple(shapes[input_shape])
    unknown = (-1,) + tuple(input_shape[1:])
    jax.eval_shape(lambda key: init(key, unknown), KEY)
    assert tuple(shapes[unknown]) == (-1,) + tuple(out.shape[1:])


def test_repeat_stacks_params_and_equals_serial():
    block = stax.serial(stax.Dense(3, b_std=0.1), stax.Relu())
    init_fn, apply_fn, _ = stax.repeat(block, 3)
    params = jax.jit(lambda key: init_fn(key, (2, 3))[1])(jax.random.PRNGKey(2))
    assert [p.shape for p in jax.tree.leaves(params)] == [(3, 3, 3), (3, 1, 3)]
    x = _normal(3, (2, 3))
    copies = [jax.tree.map(lambda a, i=i: a[i], params) for i in range(3)]
    expected = jax.jit(stax.serial(block, block, block)[1])(copies, x)
    np.testing.assert_allclose(jax.jit(apply_fn)(params, x), expected, rtol=1e-13)


def test_circular_conv_wraps_around():
    """A CIRCULAR conv of a rolled image is the rolled conv of the image."""
    init_fn, apply_fn, _ = stax.Conv(2, (3, 2), padding="CIRCULAR")
    x = _normal(4, (1, 5, 4, 2))
    params = jax.jit(lambda key: init_fn(key, x.shape)[1])(KEY)
    apply_fn = jax.jit(apply_fn)
    rolled = apply_fn(params, jnp.roll(x, (2, 1), axis=(1, 2)))
    np.testing.assert_allclose(rolled, jnp.roll(apply_fn(params, x), (2, 1), (1, 2)), rtol=1e-12)


def test_masked_array_inputs_and_unmask_fn():
    init_fn, apply_fn, _ = stax.serial(stax.Dense(3), stax.Relu(), stax.GlobalAvgPool())
    x = np.array(_normal(5, (2, 4, 2)))
    x[0, 2:] = np.nan
    params = jax.jit(lambda key: init_fn(key, x.shape)[1])(KEY)
    apply_fn = jax.jit(apply_fn)
    out = apply_fn(params, x, mask_constant=np.nan)
    assert isinstance(out, stax.MaskedArray)
    assert out.mask.shape == (2, 1) and not out.mask.any()
    mask = jnp.isnan(jnp.asarray(x))
    again = apply_fn(params, stax.MaskedArray(jnp.where(mask, 0.0, x), mask))
    np.testing.assert_allclose(again.masked_value, out.masked_value, rtol=1e-14)
    # the masked positions are left out of the average: same as the first two positions
    short = apply_fn(params, x[:1, :2])
    np.testing.assert_allclose(out.masked_value[:1], short, rtol=1e-13)
    assert not isinstance(
        stax.unmask_fn(apply_fn)(params, x, mask_constant=np.nan), stax.MaskedArray
    )


def test_nt_style_custom_layer_runs():
    @stax.layer
    @stax.supports_masking(remask_kernel=False)
    def Scale(c):
        def init_fn(rng, input_shape):
            return input_shape, ()

        def apply_fn(params, x, **kwargs):
            return c * x

        @stax.requires(diagonal_spatial=stax.Diagonal())
        def kernel_fn(k, **kwargs):
            return k

        return init_fn, apply_fn, kernel_fn, lambda mask, shape: mask

    init_fn, apply_fn, kernel_fn = Scale(3.0)
    x = jnp.array([[1.0, -2.0], [5.0, 5.0]])
    np.testing.assert_array_equal(apply_fn((), x), 3 * x)
    out = apply_fn((), x, mask_constant=5.0)
    np.testing.assert_array_equal(out.mask, [[False, False], [True, True]])
    np.testing.assert_array_equal(out.masked_value, [[3.0, -6.0], [0.0, 0.0]])
    with pytest.raises(UnsupportedLayerError, match="Scale"):
        kernel_fn(x, x)


def test_bool_and_diagonal_algebra():
    B, D = stax.Bool, stax.Diagonal
    assert (B.YES & B.MAYBE) is B.MAYBE and (B.NO & B.YES) is B.NO
    assert bool(D(input=B.YES, output=B.MAYBE)) and not bool(D())
    assert D(output=B.YES) >> D(input=B.NO) == D(output=B.YES)
    assert D(input=B.YES, output=B.NO) >> D(input=B.MAYBE, output=B.YES) == D(B.NO, B.YES)
    assert D(B.YES, B.MAYBE) << D(B.MAYBE, B.NO) == D(B.MAYBE, B.NO) >> D(B.YES, B.MAYBE)
    assert D(B.YES, B.NO) & D(B.MAYBE, B.YES) == D(B.MAYBE, B.NO)


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: stax.Conv(3, (2,), padding="same"), LayerArgumentError, "CIRCULAR"),
        (lambda: stax.DotGeneral(lhs=1.0, rhs=2.0), LayerArgumentError, "at most one"),
        (lambda: stax.Aggregate(implementation="CSR"), LayerArgumentError, "SPARSE"),
        (
            lambda: stax.GlobalSelfAttention(2, 2, 2, 1, attention_mechanism="TANH"),
            LayerArgumentError,
            "SOFTMAX",
        ),
        (lambda: stax.repeat(stax.Dense(2), -1), LayerArgumentError, "n >= 0"),
        (lambda: stax.repeat(stax.Dense(2), 2)[0](KEY, (3, 4)), LayerArgumentError, "serial"),
        (lambda: stax.Index(stax.Slice[1:])[0](KEY, (-1, 3)), LayerArgumentError, "known size"),
        (
            lambda: stax.ImageResize((4, 4), "linear")[0](KEY, (2, 3, 3)),
            LayerArgumentError,
            "2 axes",
        ),
    ],
)
def test_invalid_arguments_raise(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_invalid_patterns_raise():
    x = jnp.ones((2, 3, 4))
    with pytest.raises(LayerArgumentError, match=r"\(2, 3, 3\)"):
        stax.Aggregate(aggregate_axis=1)[1]((), x, pattern=jnp.ones((2, 3, 4)))
    with pytest.raises(LayerArgumentError, match="n_edges"):
        stax.Aggregate(implementation="SPARSE")[1]((), x, pattern=jnp.ones((2, 5, 3), int))


KEY = jax.random.PRNGKey(0)
