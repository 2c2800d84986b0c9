"""The XLA:CPU path bigntk compiles its own programs for (bigntk.empirical._planning._cpu_path)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bigntk as nt
from bigntk.build._compute import BlockKernel
from bigntk.empirical._planning import _cpu_path as cpu_path
from bigntk.empirical._planning import _records as records
from bigntk.empirical._planning import process_cache
from tests import models
from tests.oracle import oracle
from tests.test_empirical import assert_kernels_match, to64

JC, VP, SD = (
    nt.NtkImplementation.JACOBIAN_CONTRACTION,
    nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
    nt.NtkImplementation.STRUCTURED_DERIVATIVES,
)


def _cnn32():
    f, params, x1, x2 = models.conv_image_out()
    as32 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)  # noqa: E731
    return f, as32(params), as32(x1), as32(x2)


def _mlp32():
    f, params, x1, x2 = models.mlp()
    as32 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)  # noqa: E731
    return f, as32(params), as32(x1), as32(x2)


def _record_compiles(monkeypatch):
    """``[(path, executable text)]`` of every program bigntk compiles from now on."""
    seen = []
    compile_lowered = cpu_path.compile_lowered

    def recording(lowered, path):
        exe = compile_lowered(lowered, path)
        seen.append((path, exe.as_text()))
        return exe

    monkeypatch.setattr(cpu_path, "compile_lowered", recording)
    return seen


@pytest.fixture(autouse=True)
def _restore(monkeypatch):
    monkeypatch.delenv(cpu_path.ENV, raising=False)
    monkeypatch.delenv(cpu_path.TRIAL_ENV, raising=False)
    monkeypatch.setattr(process_cache(), "refused_options", set())


def test_the_rule_reads_convolutions_off_the_program():
    conv = jax.jit(lambda x, w: jax.lax.conv(x, w, (1, 1), "SAME")).lower(
        jnp.ones((2, 3, 8, 8)), jnp.ones((4, 3, 3, 3))
    )
    dense = jax.jit(lambda a, b: jnp.tanh(a @ b)).lower(jnp.ones((4, 5)), jnp.ones((5, 6)))
    assert cpu_path.rule(conv) == "xla" and cpu_path.rule(dense) == "default"
    assert cpu_path.paths("cpu") == ("default", "xla")
    assert cpu_path.paths("gpu") == () and cpu_path.paths("tpu") == ()
    assert cpu_path.first_path("gpu", conv) is None


@pytest.mark.parametrize("impl", [JC, VP, SD])
def test_an_explicit_implementation_compiles_a_cnn_without_ynnpack(monkeypatch, impl):
    monkeypatch.setattr(cpu_path, "TRIAL_S", (np.inf, np.inf))  # the rule alone
    compiled = _record_compiles(monkeypatch)
    f, params, x1, x2 = _cnn32()
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=impl)
    got = fn(x1, x2, params)
    d = fn.plan(x1, x2, params)
    assert d.how == "explicit" and d.cpu_path == "xla"
    assert [path for path, _ in compiled] == ["xla"]  # compiled once, on the rule's path
    assert "__ynn" not in compiled[0][1]
    # the same program compiled by a user's jit (XLA's defaults) agrees
    under_jit = jax.jit(lambda a, b, p: fn(a, b, p))(x1, x2, params)
    np.testing.assert_allclose(got, under_jit, rtol=2e-4, atol=2e-5)


def test_a_dense_program_keeps_xlas_defaults(monkeypatch):
    monkeypatch.setattr(cpu_path, "TRIAL_S", (np.inf, np.inf))  # the rule alone
    compiled = _record_compiles(monkeypatch)
    f, params, x1, x2 = _mlp32()
    fn = nt.empirical_ntk_fn(f, implementation=SD)
    fn(x1, x2, params)
    assert fn.plan(x1, x2, params).cpu_path == "default"
    assert [path for path, _ in compiled] == ["default"]
    assert "__ynn" in compiled[0][1]  # YNNPACK's dots kept


@pytest.mark.parametrize("impl", [JC, VP, SD])
@pytest.mark.parametrize("path", ["default", "xla"])
def test_both_paths_equal_the_oracle(monkeypatch, impl, path):
    monkeypatch.setenv(cpu_path.ENV, path)  # forces the path
    f, params, x1, x2 = models.conv_image_out()
    params, x1, x2 = to64(params), to64(x1), to64(x2)
    fn = nt.empirical_kernel_fn(f, implementation=impl)
    got = fn(x1, x2, None, params)
    assert fn.plan(x1, x2, None, params).cpu_path == path
    nngp, ntk = oracle(f, params, x1, x2)
    assert_kernels_match(got.ntk, ntk)
    assert_kernels_match(got.nngp, nngp)


def test_auto_times_its_winner_on_the_other_path(monkeypatch):
    monkeypatch.setattr(cpu_path, "TRIAL_S", (0.0, np.inf))  # however short the winner ran
    f, params, x1, x2 = _cnn32()
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation="auto")
    fn(x1, x2, params)
    d = fn.plan(x1, x2, params)
    assert d.how == "trial" and d.cpu_path in ("default", "xla")
    other = {"default": "xla", "xla": "default"}
    name = d.implementation.name
    timed = {k for k in d.seconds if k.startswith(name + "/")}
    assert timed in ({f"{name}/default"}, {f"{name}/xla"})  # the winner, on the other path
    first_path = other[timed.pop().split("/")[1]]  # the rule's path, timed as NAME
    assert first_path == "xla"  # a CNN
    t_first, t_other = d.seconds[name], d.seconds[f"{name}/{other[first_path]}"]
    switched = d.cpu_path != first_path
    assert switched == (t_other < 0.9 * t_first)  # left only for a clearly faster path
    assert d.chosen_seconds == (t_other if switched else t_first)


def test_an_explicit_implementation_times_nothing_unless_asked(monkeypatch):
    monkeypatch.setattr(cpu_path, "TRIAL_S", (0.0, np.inf))  # every run would be worth comparing
    compiled = _record_compiles(monkeypatch)
    f, params, x1, x2 = _mlp32()
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=JC)
    fn(x1, x2, params)
    d = fn.plan(x1, x2, params)
    assert [path for path, _ in compiled] == ["default"]  # the rule's path, compiled once
    assert d.cpu_path == "default" and set(d.seconds) == {"JACOBIAN_CONTRACTION"}  # one run
    assert not list(records.directory().glob("*.json")) if records.directory().exists() else True


@pytest.mark.parametrize("impl", [JC, SD])
def test_an_explicit_implementation_times_the_other_path_once(monkeypatch, impl):
    monkeypatch.setattr(cpu_path, "TRIAL_S", (0.0, np.inf))  # every run is worth comparing
    monkeypatch.setenv(cpu_path.TRIAL_ENV, "1")  # asked for
    compiled = _record_compiles(monkeypatch)
    f, params, x1, x2 = _mlp32()
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=impl)
    got = fn(x1, x2, params)
    d = fn.plan(x1, x2, params)
    assert [path for path, _ in compiled] == ["default", "xla"]  # the rule's, then the other
    name = impl.name
    t_default, t_xla = d.seconds[name], d.seconds[f"{name}/xla"]
    assert d.how == "explicit" and d.cpu_path == ("xla" if t_xla < 0.9 * t_default else "default")
    for _ in range(2):  # decided once: later calls run the chosen program, compile nothing
        np.testing.assert_array_equal(fn(x1, x2, params), got)
    assert len(compiled) == 2 and fn.plan(x1, x2, params) is d
    # a new kernel function (as in a new process) reads the recorded path: no trial
    again = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=impl)
    np.testing.assert_allclose(again(x1, x2, params), got, rtol=2e-4, atol=2e-5)
    assert [path for path, _ in compiled[2:]] == [d.cpu_path]
    r = again.plan(x1, x2, params)
    assert r.cpu_path == d.cpu_path and set(r.seconds) == {name}


_SECOND_PROCESS = """
import json, sys
import numpy as np
import bigntk as nt
from bigntk.empirical._planning import _cpu_path as cpu_path
from tests.test_cpu_path import _mlp32
cpu_path.TRIAL_S = (0.0, np.inf)  # every run is worth comparing
compiled, compile_lowered = [], cpu_path.compile_lowered
cpu_path.compile_lowered = lambda low, path: compiled.append(path) or compile_lowered(low, path)
f, params, x1, x2 = _mlp32()
fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION)
fn(x1, x2, params)
d = fn.plan(x1, x2, params)
print(json.dumps({"compiled": compiled, "path": d.cpu_path, "seconds": sorted(d.seconds)}))
"""


def test_a_second_process_reuses_the_recorded_path(monkeypatch):
    env = {**os.environ, cpu_path.TRIAL_ENV: "1", "JAX_PLATFORMS": "cpu"}
    root = Path(__file__).resolve().parents[1]

    def run():
        p = subprocess.run([sys.executable, "-c", _SECOND_PROCESS], env=env, cwd=root,
                           capture_output=True, text=True, check=True)  # fmt: skip
        return json.loads(p.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first["compiled"] == ["default", "xla"]  # timed on both paths, recorded
    assert len(first["seconds"]) == 2
    assert second["compiled"] == [first["path"]]  # the record: one program, no trial
    assert second["path"] == first["path"] and len(second["seconds"]) == 1
    assert len(list(records.directory().glob("*.json"))) == 1


def test_a_record_from_another_jax_or_an_unreadable_one_is_not_used(monkeypatch):
    f, params, x1, x2 = _mlp32()
    lowered = jax.jit(lambda p, x: f(p, x)).lower(params, x1)
    text, device = records.program_text(lowered), jax.devices()[0]
    records.put("cpu-path", text, device, {"path": "xla"})
    assert records.get("cpu-path", text, device)["path"] == "xla"
    version = jax.__version__
    monkeypatch.setattr(jax, "__version__", "0.0.1")  # another JAX: another key
    assert records.get("cpu-path", text, device) is None
    monkeypatch.setattr(jax, "__version__", version)
    (path,) = records.directory().glob("*.json")
    path.write_text("{not json")
    assert records.get("cpu-path", text, device) is None
    monkeypatch.setenv(records.ENV, "")  # records off: nothing read or written
    assert records.directory() is None and records.get("cpu-path", text, device) is None


def test_runs_outside_the_trial_window_keep_the_rule(monkeypatch):
    monkeypatch.setattr(cpu_path, "TRIAL_S", (10.0, 20.0))  # every run here is shorter
    compiled = _record_compiles(monkeypatch)
    f, params, x1, x2 = _cnn32()
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=JC)
    fn(x1, x2, params)
    assert [path for path, _ in compiled] == ["xla"]
    assert set(fn.plan(x1, x2, params).seconds) == {"JACOBIAN_CONTRACTION"}  # its one run


def test_traced_and_top_level_calls_decide_apart():
    f, params, x1, x2 = _cnn32()
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=SD)
    seen = []
    jax.jit(lambda a, b, p: seen.append(fn.plan(a, b, p)) or fn(a, b, p))(x1, x2, params)
    assert seen[0].cpu_path is None  # the user's jit compiles it, with its options
    assert fn.plan(x1, x2, params).cpu_path == "xla"
    # the other order (the builder's): a traced call after a top-level trial keeps
    # AUTO's implementation, with the enclosing jit's options
    auto = nt.empirical_ntk_fn(f, vmap_axes=0, implementation="auto")
    top = auto.plan(x1, x2, params)
    traced = []
    jax.jit(lambda a, b, p: traced.append(auto.plan(a, b, p)) or auto(a, b, p))(x1, x2, params)
    assert traced[0].implementation == top.implementation and traced[0].how == top.how
    assert traced[0].cpu_path is None


def test_the_users_flag_and_the_environment_are_obeyed(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
    assert cpu_path.paths("cpu") == ()
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setenv(cpu_path.ENV, "default")
    assert cpu_path.paths("cpu") == ("default",)
    f, params, x1, x2 = _cnn32()
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=JC)
    fn(x1, x2, params)
    assert fn.plan(x1, x2, params).cpu_path == "default"
    monkeypatch.setenv(cpu_path.ENV, "fastest")
    with pytest.raises(ValueError, match="BIGNTK_XLA_CPU_PATH='fastest' is not understood"):
        cpu_path.paths("cpu")


def test_an_xla_that_refuses_the_option_falls_back_to_its_defaults(monkeypatch):
    monkeypatch.setitem(cpu_path._OPTIONS, "xla", {cpu_path.YNN_FUSION_TYPE: "NO_SUCH_TYPE"})
    f, params, x1, x2 = _cnn32()
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=SD)
    got = fn(x1, x2, params)
    assert cpu_path.YNN_FUSION_TYPE in process_cache().refused_options
    assert cpu_path.paths("cpu") == ()  # not tried again in this process
    expected = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=JC)(x1, x2, params)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5)


def test_cpu_compiler_options_select_the_xla_path_in_a_users_jit():
    f, params, x1, x2 = _cnn32()
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=VP)
    jitted = jax.jit(lambda a, b, p: fn(a, b, p), compiler_options=nt.cpu_compiler_options())
    text = jitted.lower(x1, x2, params).compile().as_text()
    assert "__ynn" not in text
    np.testing.assert_allclose(jitted(x1, x2, params), fn(x1, x2, params), rtol=2e-4, atol=2e-5)


def test_the_builders_block_programs_follow_the_rule():
    f, params, x1, _ = _cnn32()
    x = np.asarray(jnp.concatenate([x1, x1 * 0.5]))
    kernel = BlockKernel(f, params, ["ntk"], (-1,), (), 0, SD, block=len(x))
    blocks = kernel(x)  # K(x, x): the 'self' program on one device, else 'pair'
    kernel(x, x[::-1])
    assert "pair" in kernel.cpu_paths and set(kernel.cpu_paths.values()) == {"xla"}
    expected = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=JC)(x, None, params)
    np.testing.assert_allclose(blocks["ntk"], expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("impl", [JC, VP, SD])
def test_the_rough_estimate_bounds_xlas_peak_so_a_traced_call_compiles_nothing(monkeypatch, impl):
    # with vmap_axes, an example's outputs hold only that example's activations: the
    # estimate (which decides whether to compile for XLA's peak while tracing) bounds
    # the peak with its safety factor, and not by much more (it was ~30x here, so a
    # traced call compiled its program once more just to read the peak)
    from bigntk.empirical._api import _info

    f, params, x1, x2 = _cnn32()
    rough = _info(f, (-1,), (), 0, x1, x2, params, {}).rough_bytes
    top = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=impl).plan(x1, x2, params)
    budget = 16 * top.peak_bytes
    assert top.peak_bytes <= rough <= budget
    compiled = _record_compiles(monkeypatch)
    fn = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=impl, memory_budget=budget)
    seen = []
    got = jax.jit(lambda a, b, p: seen.append(fn.plan(a, b, p)) or fn(a, b, p))(x1, x2, params)
    assert compiled == []  # nothing compiled while tracing: the user's jit compiles once
    assert seen[0].how == "explicit" and seen[0].peak_bytes is None
    want = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=JC)(x1, x2, params)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
