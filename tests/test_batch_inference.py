"""vmap_axes=None: batch independence proved on f's program, and used only when proved."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigntk as nt
from bigntk import stax
from bigntk.empirical._batch import infer_vmap_axes
from tests.oracle import oracle
from tests.test_empirical import assert_kernels_match

JC, VP, SD = 1, 2, 3
K = jax.random.split(jax.random.PRNGKey(7), 8)
W = jax.random.normal(K[0], (3, 4), jnp.float64)
B = jax.random.normal(K[1], (4,), jnp.float64)
X1 = jax.random.normal(K[2], (5, 3), jnp.float64)
X2 = jax.random.normal(K[3], (4, 3), jnp.float64)
P = {"w": W, "b": B}


def _dense(p, x):
    return x @ p["w"] + p["b"][None, :]


def _layer_norm(h):
    return (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-5)


def _swapped_at_one(h, n):
    t = jnp.tanh(h)
    return h - t if n > 1 else t - h


INDEPENDENT = {
    "relu": lambda p, x: jax.nn.relu(_dense(p, x)),
    "softmax_over_logits": lambda p, x: jax.nn.softmax(_dense(p, x), axis=-1),
    "layer_norm": lambda p, x: _layer_norm(_dense(p, x)),
    "inner_jit": lambda p, x: jax.jit(lambda h: jnp.tanh(h) * 2.0)(_dense(p, x)),
    "remat": lambda p, x: jax.checkpoint(jnp.sin)(_dense(p, x)),
    "feature_slice_times_param": lambda p, x: x[:, :1] * p["b"][None, :],
    "constant_over_the_batch": lambda p, x: _dense(p, x) * jnp.arange(4.0)[None, :],
    "transposed_twice": lambda p, x: jnp.tanh(_dense(p, x).T).T,
}

MIXING = {
    # each would give a different kernel if computed example by example
    "batch_mean": lambda p, x: (lambda h: h - h.mean(0, keepdims=True))(_dense(p, x)),
    "batch_size_as_a_number": lambda p, x: _dense(p, x) / x.shape[0],
    "position_in_the_batch": lambda p, x: _dense(p, x) * jnp.arange(x.shape[0])[:, None],
    "numpy_position_constant": lambda p, x: _dense(p, x) * np.arange(x.shape[0])[:, None],
    "numpy_batch_size_constant": lambda p, x: _dense(p, x) * np.full((1, 4), x.shape[0]),
    "roll_over_the_batch": lambda p, x: jnp.roll(_dense(p, x), 1, axis=0),
    "cumsum_over_the_batch": lambda p, x: jnp.cumsum(_dense(p, x), 0),
    "softmax_over_the_batch": lambda p, x: jax.nn.softmax(_dense(p, x), axis=0),
    "gram_across_examples": lambda p, x: _dense(p, x) @ _dense(p, x).T,
    "branch_on_batch_size": lambda p, x: _dense(p, x) * (2.0 if x.shape[0] == 1 else 1.0),
    "sorted_over_the_batch": lambda p, x: jnp.sort(_dense(p, x), axis=0),
    # the same primitives with the operands swapped for one example
    "operands_swapped_at_one": lambda p, x: _swapped_at_one(_dense(p, x), x.shape[0]),
}


@pytest.mark.parametrize("name", sorted(INDEPENDENT))
def test_batch_independence_is_proved(name):
    assert infer_vmap_axes(INDEPENDENT[name], X1, X2, P, {}, {}) == 0


@pytest.mark.parametrize("name", sorted(MIXING))
def test_mixing_across_the_batch_is_never_inferred(name):
    assert infer_vmap_axes(MIXING[name], X1, X2, P, {}, {}) is None


@pytest.mark.parametrize("name", ["batch_size_as_a_number", "position_in_the_batch"])
def test_the_refusals_matter_vmap_axes_0_would_change_the_kernel(name):
    """The test above can fail: for these, per-example computation gives another kernel."""
    f = MIXING[name]
    _, ntk = oracle(f, P, X1, X2, (), ())
    per_example = nt.empirical_ntk_fn(f, (), (), 0, JC)(X1, X2, P)
    assert not np.allclose(np.asarray(per_example), ntk[0], rtol=1e-6)
    assert_kernels_match(nt.empirical_ntk_fn(f, (), (), None, JC)(X1, X2, P), ntk)


@pytest.mark.parametrize("impl", [JC, VP, SD])
@pytest.mark.parametrize("name", sorted(INDEPENDENT) + sorted(MIXING))
@pytest.mark.parametrize("axes", [((), ()), ((-1,), (0,))])
def test_kernels_without_vmap_axes_equal_the_oracle(name, impl, axes):
    f = {**INDEPENDENT, **MIXING}[name]
    trace_axes, diagonal_axes = axes
    x2 = X1 if diagonal_axes else X2
    _, ntk = oracle(f, P, X1, x2, trace_axes, diagonal_axes)
    got = nt.empirical_ntk_fn(f, trace_axes, diagonal_axes, None, impl)(X1, x2, P)
    assert_kernels_match(got, ntk)


def _stax_models():
    cnn = stax.serial(
        stax.Conv(4, (3, 3)), stax.Relu(), stax.AvgPool((2, 2)), stax.Flatten(), stax.Dense(3)
    )
    mlp = stax.serial(stax.Dense(8), stax.LayerNorm(), stax.Gelu(), stax.Dense(3))
    return {"cnn": (cnn, (6, 8, 8, 3)), "mlp_layer_norm": (mlp, (6, 5))}


@pytest.mark.parametrize("name", ["cnn", "mlp_layer_norm"])
def test_stax_models_are_proved_and_their_diagonal_equals_the_oracle(name):
    (init, apply, _), shape = _stax_models()[name]
    _, params = init(K[4], shape)
    params = jax.tree.map(lambda v: v.astype(jnp.float64), params)
    x = jax.random.normal(K[5], shape, jnp.float64)
    assert infer_vmap_axes(apply, x, x, params, {}, {}) == 0
    _, ntk = oracle(apply, params, x, None, (-1,), (0,))
    for impl in (JC, VP, SD):
        assert_kernels_match(nt.empirical_ntk_fn(apply, diagonal_axes=(0,), implementation=impl)(
            x, None, params), ntk)  # fmt: skip


def test_an_embedding_with_integer_tokens_is_proved_under_jit():
    emb = jax.random.normal(K[6], (11, 6), jnp.float64)
    w = jax.random.normal(K[7], (6, 2), jnp.float64)

    def f(p, tokens):
        return jnp.tanh(p["emb"][tokens].mean(1) @ p["w"])

    params = {"emb": emb, "w": w}
    t1 = jnp.array([[1, 2, 3], [4, 5, 10], [0, 0, 7]])
    t2 = jnp.array([[9, 8, 1], [2, 2, 2]])
    seen = []

    def traced(a, b, p):
        seen.append(infer_vmap_axes(f, a, b, p, {}, {}))
        return nt.empirical_ntk_fn(f, implementation=JC)(a, b, p)

    got = jax.jit(traced)(t1, t2, params)
    assert seen == [0]
    _, ntk = oracle(f, params, t1, t2)
    assert_kernels_match(got, ntk)


def test_array_keyword_arguments_keep_vmap_axes_none():
    """Their batch axes are unknown (NT's kwargs axes default to unbatched)."""

    def f(p, x, scale=None):
        return _dense(p, x) * scale

    scale = jnp.ones((5, 4))
    assert infer_vmap_axes(f, X1, X1, P, {"scale": scale}, {"scale": scale}) is None
    assert infer_vmap_axes(lambda p, x, train=True: _dense(p, x), X1, X2, P,
                           {"train": False}, {"train": False}) == 0  # fmt: skip


def test_one_example_or_no_parameters_is_left_alone():
    assert infer_vmap_axes(INDEPENDENT["relu"], X1[:1], X1[:1], P, {}, {}) is None
    assert infer_vmap_axes(lambda p, x: x * 2.0, X1, X2, {"n": 3}, {}, {}) is None
