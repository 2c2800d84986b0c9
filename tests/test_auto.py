"""AUTO (choosing the implementation) and the memory budget (chunked NTKs), against the oracle."""

import itertools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigntk as nt
from bigntk.empirical._api import _fixed_chunks_kernel_fn
from bigntk.empirical._chunking import Chunks, param_groups
from bigntk.empirical._planning import _cpu_path, _timing
from bigntk.empirical._trees import SplitParams
from bigntk.errors import MemoryBudgetError
from tests import models
from tests.oracle import oracle
from tests.test_empirical import assert_kernels_match, to64

JC, VP, SD = (
    nt.NtkImplementation.JACOBIAN_CONTRACTION,
    nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
    nt.NtkImplementation.STRUCTURED_DERIVATIVES,
)
AXES = [((-1,), ()), ((), ()), ((), (0,)), ((0,), ())]


def _case(model, axes, x2_given):
    f, params, x1, x2 = models.ALL[model]()
    params, x1, x2 = to64(params), to64(x1), to64(x2)
    trace_axes, diagonal_axes = axes
    if (0 in trace_axes or 0 in diagonal_axes) and x2_given:
        x2 = jax.tree.map(lambda a: a[::-1] * 0.5, x1)  # same count, other values
    return f, params, x1, (x2 if x2_given else None)


# --- chunks: every way of cutting gives the unchanged kernel ------------------------------

CHUNKS = {
    "examples1": (Chunks(examples=1), 0),
    "examples2_and_1": (Chunks(examples=2, examples2=1), 0),
    "params_small": (Chunks(params=5), None),
    "params_and_examples": (Chunks(examples=2, params=7), 0),
    "basis": (Chunks(basis=2), None),
    "all": (Chunks(examples=1, examples2=2, params=4, basis=3), 0),
}


def _pick(*key) -> int:
    """A deterministic hash (Python's str hash changes between processes, e.g. xdist workers)."""
    return zlib.crc32(repr(key).encode())


CHUNK_CASES = [
    (name, impl, model, axes)
    for (name, impl), model, axes in itertools.product(
        itertools.product(CHUNKS, (JC, VP, SD)), ("mlp", "conv_image_out", "pytree_io"), AXES
    )
    if (impl == VP or CHUNKS[name][0].basis is None)
    and (_pick(name, impl, model, axes) % 4 == 0 or model == "mlp")  # a fixed quarter, all mlp
]


@pytest.mark.parametrize("name, impl, model, axes", CHUNK_CASES, ids=str)
def test_chunked_kernels_equal_the_oracle(name, impl, model, axes):
    chunks, vmap_axes = CHUNKS[name]
    trace_axes, diagonal_axes = axes
    x2_given = _pick(name) % 2 == 0
    f, params, x1, x2 = _case(model, axes, x2_given)
    fn = _fixed_chunks_kernel_fn(f, trace_axes, diagonal_axes, vmap_axes, impl, chunks)
    got = fn(x1, x2, "ntk", params)["ntk"]
    _, ntk = oracle(f, params, x1, x2, trace_axes, diagonal_axes)
    assert_kernels_match(got, ntk)


def test_chunking_examples_that_do_not_divide_evenly():
    f, params, x1, x2 = _case("mlp", ((-1,), ()), True)
    x1 = jnp.concatenate([x1, x1 * 0.3, x1[:1]])  # 7 examples, blocks of 3
    fn = _fixed_chunks_kernel_fn(f, (-1,), (), 0, JC, Chunks(examples=3, examples2=2))
    _, ntk = oracle(f, params, x1, x2)
    assert_kernels_match(fn(x1, x2, "ntk", params)["ntk"], ntk)


def test_parameter_groups_pack_small_leaves_and_slice_big_ones():
    sp = SplitParams({"a": jnp.zeros((10, 4)), "b": jnp.zeros(3), "c": jnp.zeros((2, 2))})
    packed, split = param_groups(sp, 8)
    # leaves in tree order a (40, too big: 2 rows per slice), b (3), c (4)
    assert split == [(0, 2)]
    assert packed == [[1, 2]]


# --- the memory budget -------------------------------------------------------------------


def _wide_mlp(width=96, n=6, seed=0, mixing=False):
    """``mixing``: examples see the batch mean (vmap_axes cannot be inferred)."""
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    params = {
        "w1": jax.random.normal(k[0], (12, width), jnp.float64),
        "w2": jax.random.normal(k[1], (width, width), jnp.float64),
        "w3": jax.random.normal(k[2], (width, 4), jnp.float64),
    }

    def f(p, x):
        h = jnp.tanh(x @ p["w1"] / 4.0)
        h = jnp.tanh(h @ p["w2"] / jnp.sqrt(width))
        if mixing:
            h = h - 0.5 * h.mean(0, keepdims=True)
        return h @ p["w3"] / jnp.sqrt(width)

    x1 = jax.random.normal(k[3], (n, 12), jnp.float64)
    x2 = jax.random.normal(k[4], (n - 1, 12), jnp.float64)
    return f, params, x1, x2


def _peak(f, params, x1, x2, vmap_axes, impl):
    plain = nt.empirical_ntk_fn(f, (), (), vmap_axes, impl)
    full = plain.plan(x1, x2, params)
    assert full.how == "explicit" and full.chunks == Chunks()
    m = jax.jit(lambda a, b, p: plain(a, b, p)).lower(x1, x2, params).compile().memory_analysis()
    return m.temp_size_in_bytes + m.output_size_in_bytes


@pytest.mark.parametrize("impl, vmap_axes", [(JC, 0), (VP, 0), (SD, 0), (VP, None)])
def test_a_budget_below_the_peak_is_met_by_chunks_with_results_unchanged(impl, vmap_axes):
    f, params, x1, x2 = _wide_mlp(mixing=vmap_axes is None)
    budget = _peak(f, params, x1, x2, vmap_axes, impl) // 3
    fn = nt.empirical_ntk_fn(f, (), (), vmap_axes, impl, memory_budget=budget)
    got = fn(x1, x2, params)
    d = fn.plan(x1, x2, params)
    assert d.chunks != Chunks()
    assert d.peak_bytes <= budget
    _, ntk = oracle(f, params, x1, x2, (), ())
    assert_kernels_match(got, ntk)


@pytest.mark.parametrize("impl", [JC, SD])
def test_without_vmap_axes_some_implementations_have_a_floor_and_auto_goes_around_it(impl):
    """JC holds whole-leaf cotangents and SD has no example knob without vmap_axes."""
    f, params, x1, x2 = _wide_mlp(mixing=True)
    budget = _peak(f, params, x1, x2, None, impl) // 3
    fn = nt.empirical_ntk_fn(f, (), (), None, impl, memory_budget=budget)
    with pytest.raises(MemoryBudgetError, match=f"memory_budget is {budget:,} bytes"):
        fn(x1, x2, params)
    auto = nt.empirical_ntk_fn(f, (), (), None, 0, memory_budget=budget)
    _, ntk = oracle(f, params, x1, x2, (), ())
    assert_kernels_match(auto(x1, x2, params), ntk)
    assert auto.plan(x1, x2, params).peak_bytes <= budget


def test_every_implementation_meets_a_third_of_its_peak_somewhere():
    """Not every knob helps every implementation, but each has one that does (vmap_axes=0)."""
    f, params, x1, x2 = _wide_mlp()
    for impl in (JC, VP):
        plain = nt.empirical_ntk_fn(f, (), (), 0, impl)
        m = jax.jit(lambda a, b, p, g=plain: g(a, b, p)).lower(x1, x2, params).compile()
        m = m.memory_analysis()
        budget = (m.temp_size_in_bytes + m.output_size_in_bytes) // 3
        fn = nt.empirical_ntk_fn(f, (), (), 0, impl, memory_budget=budget)
        fn(x1, x2, params)
        assert fn.plan(x1, x2, params).peak_bytes <= budget, impl


def test_a_budget_too_small_names_the_minimum_and_that_minimum_works():
    f, params, x1, x2 = _wide_mlp()
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=VP, memory_budget=1000)
    with pytest.raises(MemoryBudgetError, match="needs at least") as e:
        fn(x1, x2, params)
    assert isinstance(e.value, MemoryError)
    minimum = int(str(e.value).split("Pass memory_budget=")[1].split()[0])
    assert minimum > 1000
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=VP, memory_budget=minimum)
    _, ntk = oracle(f, params, x1, x2)
    assert_kernels_match(fn(x1, x2, params), ntk)


@pytest.mark.parametrize("bad", [0, -5, "1GB", True, float("nan"), [1e9]])
def test_bad_budgets_are_refused_when_the_function_is_made(bad):
    with pytest.raises(ValueError, match="memory_budget must be None"):
        nt.empirical_ntk_fn(lambda p, x: x * p, memory_budget=bad)


def test_the_default_budget_is_a_fraction_of_free_memory():
    from bigntk.empirical._planning._memory import default_budget, free_memory

    free = free_memory()
    assert free is not None and free > 0
    assert 0 < default_budget() <= free


def test_the_nngp_ignores_the_budget_and_is_exact():
    f, params, x1, x2 = _wide_mlp()
    got = nt.empirical_nngp_fn(f, memory_budget=1000)(x1, x2, params)
    nngp, _ = oracle(f, params, x1, x2)
    assert_kernels_match(got, nngp)


# --- AUTO ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(models.ALL))
@pytest.mark.parametrize("vmap_axes", [None, 0])
@pytest.mark.parametrize("axes", [((-1,), ()), ((), (0,))])
def test_auto_equals_the_oracle_and_says_how_it_chose(model, vmap_axes, axes):
    trace_axes, diagonal_axes = axes
    f, params, x1, x2 = _case(model, axes, True)
    fn = nt.empirical_kernel_fn(f, trace_axes, diagonal_axes, vmap_axes, nt.NtkImplementation.AUTO)
    got = fn(x1, x2, None, params)
    nngp, ntk = oracle(f, params, x1, x2, trace_axes, diagonal_axes)
    assert_kernels_match(got.ntk, ntk)
    assert_kernels_match(got.nngp, nngp)
    d = fn.plan(x1, x2, None, params)
    assert d.how in ("trial", "only")
    assert d.implementation in (JC, VP, SD)
    if d.how == "trial":  # the fastest implementation (on the first CPU path timed)
        first_path = {k: v for k, v in d.seconds.items() if "/" not in k}
        assert d.seconds[d.implementation.name] == min(first_path.values())


def test_auto_decides_once_per_signature():
    f, params, x1, x2 = _wide_mlp()
    fn = nt.empirical_ntk_fn(f, implementation=0)
    first = fn.plan(x1, x2, params)
    fn(x1 * 2, x2, params)  # same shapes: the cached decision
    assert fn.plan(x1, x2, params) is first
    other = fn.plan(x1[:3], x2, params)  # another shape: a new decision
    assert other is not first and other.how == "trial"
    assert fn.plan(x1.astype(jnp.float32), x2, params) is not first  # another dtype


def test_auto_reuses_a_recorded_choice_and_times_nothing(monkeypatch):
    compiled, compile_lowered = [], _cpu_path.compile_lowered
    monkeypatch.setattr(
        _cpu_path,
        "compile_lowered",
        lambda low, path: compiled.append(path) or compile_lowered(low, path),
    )
    f, params, x1, x2 = _wide_mlp()
    first = nt.empirical_ntk_fn(f, vmap_axes=0, implementation="auto")
    want = first(x1, x2, params)
    timed = first.plan(x1, x2, params)
    assert timed.how == "trial" and len(compiled) >= 3  # every candidate compiled and timed
    n = len(compiled)
    # a new kernel function (as in a new process) reads the choice recorded on disk
    again = nt.empirical_ntk_fn(f, vmap_axes=0, implementation="auto")
    got = again(x1, x2, params)
    d = again.plan(x1, x2, params)
    assert d.how == "recorded" and d.implementation == timed.implementation
    assert d.cpu_path == timed.cpu_path and d.seconds == timed.seconds
    assert len(compiled) == n + 1  # the recorded implementation only
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    monkeypatch.setenv("BIGNTK_CACHE_DIR", "")  # records off: timed again
    assert nt.empirical_ntk_fn(f, vmap_axes=0, implementation=0).plan(x1, x2, params).how == "trial"


def test_auto_under_jit_times_the_candidates_on_stand_ins(monkeypatch):
    # as on a GPU: no CPU path to choose, so concrete calls share the traced decision
    monkeypatch.setattr(_cpu_path, "paths", lambda platform: ())
    f, params, x1, x2 = _wide_mlp()
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation="auto")
    seen = []

    def traced(a, b, p):
        seen.append(fn.plan(a, b, p))  # under jit: the decision made while tracing
        return fn(a, b, p)

    got = jax.jit(traced)(x1, x2, params)
    d = seen[0]
    assert d.how == "stand-in"
    assert d.chosen_seconds == min(d.seconds.values())
    assert fn.plan(x1, x2, params) is d  # a measurement: not redone on concrete arguments
    _, ntk = oracle(f, params, x1, x2)
    assert_kernels_match(got, ntk)


def test_auto_under_jit_with_integer_inputs_and_typed_keys():
    # token ids index an embedding: zero stand-ins are valid indices; the rng is a typed key
    emb = jax.random.normal(jax.random.key(1), (11, 6))
    w = jax.random.normal(jax.random.key(2), (6, 3))

    def f(p, tokens, rng=None):
        h = p["emb"][tokens].mean(1) @ p["w"]
        return h * jax.random.bernoulli(rng, 0.9, h.shape)

    params = {"emb": emb, "w": w}
    x1 = jnp.array([[1, 2, 3], [4, 5, 10]])
    x2 = jnp.array([[0, 7, 9]])
    fn = nt.empirical_ntk_fn(f, implementation=0)
    key = jax.random.key(3)
    seen = []

    def traced(a, b, p, k):
        seen.append(fn.plan(a, b, p, rng=k))
        return fn(a, b, p, rng=k)

    got = jax.jit(traced)(x1, x2, params, key)
    assert seen[0].how == "stand-in"
    want = nt.empirical_ntk_fn(f, implementation=1)(x1, x2, params, rng=key)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_auto_under_jit_predicts_when_timing_is_impossible(monkeypatch):
    # fault injection: stand-in arrays cannot be made (e.g. an unknown dtype)
    monkeypatch.setattr(_timing, "stand_ins", lambda dynamic: None)
    f, params, x1, x2 = _wide_mlp()
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation="auto")
    seen = []

    def traced(a, b, p):
        seen.append(fn.plan(a, b, p))
        return fn(a, b, p)

    got = jax.jit(traced)(x1, x2, params)
    d = seen[0]
    assert d.how == "estimate"
    assert fn.plan(x1, x2, params).how == "trial"  # concrete arguments: measured now
    assert set(d.seconds) == {
        "JACOBIAN_CONTRACTION",
        "NTK_VECTOR_PRODUCTS",
        "STRUCTURED_DERIVATIVES",
    }
    _, ntk = oracle(f, params, x1, x2)
    assert_kernels_match(got, ntk)


def test_auto_drops_candidates_over_budget():
    f, params, x1, x2 = _wide_mlp(width=128, n=8)
    fn = nt.empirical_ntk_fn(f, trace_axes=(), implementation=0, memory_budget=2_000_000)
    got = fn(x1, x2, params)
    d = fn.plan(x1, x2, params)
    assert d.peak_bytes is None or d.peak_bytes <= 2_000_000
    _, ntk = oracle(f, params, x1, x2, (), ())
    assert_kernels_match(got, ntk)


def test_auto_with_parameters_that_are_all_constant_gives_zeros():
    fn = nt.empirical_ntk_fn(lambda p, x: x * p["k"][None], implementation=0)
    out = fn(np.ones((2, 3)), None, {"k": np.arange(3)})  # an integer leaf: held constant
    assert out.shape == (2, 2) and not np.any(np.asarray(out))
