"""The builder end to end on a real local Ray cluster and a Zarr store on disk."""

import functools
import logging
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import jax
import numpy as np
import pytest
import zarr

import bigntk as nt
from bigntk.errors import BuildInputError, IncompleteKernelError, NotAStoreError, SpecMismatchError
from bigntk.store import KernelStore, StoreWriter
from tests import builder_models as bm

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.xdist_group("ray")]

ROOT = pathlib.Path(__file__).resolve().parent.parent


def reference(f, params, x1, x2, **kw):
    kernel_fn = nt.empirical_kernel_fn(
        f,
        kw.get("trace_axes", (-1,)),
        kw.get("diagonal_axes", ()),
        kw.get("vmap_axes", 0),
        kw.get("implementation", 1),
    )
    return kernel_fn(x1, x2, ("nngp", "ntk"), params)


@pytest.mark.parametrize(
    "n1,n2,block,settings",
    [
        (23, 17, 8, {}),  # rectangular, uneven
        (23, None, 8, {}),  # symmetric, uneven
        (20, None, 8, {"trace_axes": ()}),  # symmetric with (K, K) output axes
        (19, None, 8, {"diagonal_axes": (0,)}),  # row-blocked diagonal
        (12, 9, 4, {"vmap_axes": None, "implementation": 2, "trace_axes": ()}),
        (14, None, 8, {"implementation": 0}),  # AUTO: decided on the worker's first block
    ],
    ids=["rect", "sym", "sym-untraced", "diag", "vp-novmap", "sym-auto"],
)
def test_build_equals_in_memory_kernel(tmp_path, n1, n2, block, settings):
    f, params = bm.mlp()
    x1 = bm.data(n1, seed=1)
    x2 = None if n2 is None else bm.data(n2, seed=2)
    path = tmp_path / "k.zarr"
    result = nt.build_kernel(
        f, params, x1, x2, path=str(path), kinds=("nngp", "ntk"), block_size=block,
        progress=False, **settings,
    )  # fmt: skip
    assert result.computed == result.total and result.skipped == 0
    expected = reference(f, params, x1, x2, **settings)
    for kind in ("nngp", "ntk"):
        got = nt.open_kernel(str(path), kind).compute()
        want = np.asarray(getattr(expected, kind))
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
        if n2 is None and "diagonal_axes" not in settings:
            perm = (1, 0) + tuple(range(2, got.ndim))
            if got.ndim == 4:
                perm = (1, 0, 3, 2)
            np.testing.assert_array_equal(got, np.transpose(got, perm))  # exactly symmetric


def test_sources_npy_and_zarr(tmp_path):
    f, params = bm.mlp()
    x1, x2 = bm.data(10, seed=1), bm.data(7, seed=2)
    np.save(tmp_path / "x1.npy", x1)
    zarr.create_array(str(tmp_path / "x2.zarr"), data=x2, chunks=(3, 5))
    nt.build_kernel(
        f, params, str(tmp_path / "x1.npy"), str(tmp_path / "x2.zarr"),
        path=str(tmp_path / "k.zarr"), block_size=4, progress=False,
    )  # fmt: skip
    got = nt.open_kernel(str(tmp_path / "k.zarr")).compute()
    np.testing.assert_allclose(got, reference(f, params, x1, x2).ntk, rtol=2e-5, atol=1e-5)


def test_xarray_opens_the_store(tmp_path):
    xr = pytest.importorskip("xarray")
    f, params = bm.mlp()
    nt.build_kernel(f, params, bm.data(9), path=str(tmp_path / "k.zarr"), kinds=("nngp", "ntk"),
                    trace_axes=(), block_size=4, progress=False)  # fmt: skip
    ds = xr.open_zarr(str(tmp_path / "k.zarr"), consolidated=False)
    assert ds["ntk"].dims == ("x1", "x2", "out1_1", "out1_2")
    assert ds["nngp"].shape == (9, 9, 3, 3)


def test_resume_computes_only_missing_blocks(tmp_path):
    f, params = bm.mlp()
    x = bm.data(30)
    path = str(tmp_path / "k.zarr")
    first = nt.build_kernel(f, params, x, path=path, block_size=8, progress=False)
    full = nt.open_kernel(path).compute()
    # forget three blocks, as if the driver died before committing them
    store = StoreWriter.open(path)
    done = store.committed()
    lost = np.argwhere(done)[[0, 3, -1]]
    done[tuple(lost.T)] = False
    store.commit(lost, done)
    with pytest.raises(IncompleteKernelError, match="missing 3 of 10 blocks"):
        nt.open_kernel(path)
    assert np.isnan(nt.open_kernel(path, allow_incomplete=True).compute()).sum() == 0  # data kept
    again = nt.build_kernel(f, params, x, path=path, block_size=8, progress=False)
    assert (first.total, again.computed, again.skipped) == (10, 3, 7)
    np.testing.assert_array_equal(nt.open_kernel(path).compute(), full)


def test_store_from_another_spec_is_refused_not_overwritten(tmp_path):
    f, params = bm.mlp()
    x = bm.data(12)
    path = str(tmp_path / "k.zarr")
    nt.build_kernel(f, params, x, path=path, block_size=4, progress=False)
    before = nt.open_kernel(path).compute()
    with pytest.raises(SpecMismatchError, match="different spec") as e:
        nt.build_kernel(f, params, x * 2, path=path, block_size=4, progress=False)
    assert "overwrite=True" in str(e.value)
    np.testing.assert_array_equal(nt.open_kernel(path).compute(), before)
    r = nt.build_kernel(f, params, x * 2, path=path, block_size=4, progress=False, overwrite=True)
    assert r.computed == r.total


def _a_file(d):
    (d / "file.txt").write_text("hello")
    return str(d / "file.txt")


def _a_directory(d):
    (d / "x").mkdir()
    (d / "x" / "a").write_text("1")
    return str(d / "x")


def _a_zarr_group(d):
    zarr.open_group(str(d / "g.zarr"), mode="w")
    return str(d / "g.zarr")


@pytest.mark.parametrize("make", [_a_file, _a_directory, _a_zarr_group])
def test_path_that_is_not_a_store(tmp_path, make):
    f, params = bm.mlp()
    path = make(tmp_path)
    with pytest.raises(NotAStoreError, match="not a bigntk kernel store"):
        nt.build_kernel(f, params, bm.data(4), path=path, progress=False)


def test_bad_inputs_fail_before_any_work(tmp_path):
    f, params = bm.mlp()
    x = bm.data(6)
    path = str(tmp_path / "k.zarr")
    bad = x.copy()
    bad[4, 2] = np.nan
    with pytest.raises(BuildInputError, match=r"non-finite value \(nan\) at index \(4, 2\)"):
        nt.build_kernel(f, params, bad, path=path, progress=False)
    with pytest.raises(BuildInputError, match="same feature shape"):
        nt.build_kernel(f, params, x, bm.data(3, features=4), path=path, progress=False)
    with pytest.raises(BuildInputError, match="kinds must be"):
        nt.build_kernel(f, params, x, path=path, kinds=("ntk", "foo"), progress=False)
    with pytest.raises(BuildInputError, match="block_size must be a positive int"):
        nt.build_kernel(f, params, x, path=path, block_size=0, progress=False)
    with pytest.raises(BuildInputError, match="at least one example"):
        nt.build_kernel(f, params, x[:0], path=path, progress=False)
    with pytest.raises(BuildInputError, match="traced"):
        nt.build_kernel(f, params, x, path=path, trace_axes=(0, 1), progress=False)
    assert not os.path.exists(path)


def _worker_pids():
    """This session's BlockWorker processes: descendants of this process, which started the
    test session's Ray (another session's builds on the same machine are left alone)."""
    import psutil

    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if any("BlockWorker" in part for part in p.cmdline()):
                pids.append(p.pid)
        except psutil.Error:  # exited meanwhile
            continue
    return pids


def _committed(path: str) -> int:
    """Blocks committed so far; 0 while the driver is still creating the store (its group
    exists before its attributes do)."""
    try:
        return int(KernelStore.open(path).committed().sum())
    except (FileNotFoundError, NotAStoreError):
        return 0


def test_killed_worker_is_replaced_and_its_block_recomputed(tmp_path):
    params = bm.slow_mlp_params()
    x = bm.data(40)
    path = str(tmp_path / "k.zarr")
    outcome = {}

    def run():
        outcome["result"] = nt.build_kernel(
            bm.slow_mlp_fn, params, x, path=path, block_size=8, vmap_axes=0, progress=False
        )

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 60
    while time.time() < deadline and _committed(path) < 2:
        time.sleep(0.1)
    pids = _worker_pids()
    assert pids, "no worker process found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert outcome["result"].computed == 15
    want = reference(bm.slow_mlp_fn, params, x, None, vmap_axes=None).ntk
    np.testing.assert_allclose(nt.open_kernel(path).compute(), want, rtol=2e-5, atol=1e-5)


_DRIVER = textwrap.dedent(
    """
    import sys, cloudpickle, bigntk as nt
    from tests import builder_models as bm
    cloudpickle.register_pickle_by_value(bm)
    nt.build_kernel(bm.slow_mlp_fn, bm.slow_mlp_params(), bm.data(40), path=sys.argv[1],
                    block_size=8, vmap_axes=0, progress=False)
    """
)


def test_killed_driver_resumes_to_the_same_kernel_bit_for_bit(tmp_path):
    path = str(tmp_path / "k.zarr")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, path], env=env, cwd=ROOT,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 90
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(path):
            try:
                committed = int(KernelStore.open(path).committed().sum())
            except (NotAStoreError, KeyError, FileNotFoundError):
                committed = 0
            if committed >= 3:
                break
        time.sleep(0.1)
    assert proc.poll() is None and committed >= 3, "the build finished or never started"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = int(KernelStore.open(path).committed().sum())
    assert kept < 15
    # the resume and the clean build run here, on the session's Ray (the killed driver's
    # own Ray died with it): the same call as the driver's
    with jax.enable_x64(False):  # the driver's float32 parameters, bit for bit
        params = bm.slow_mlp_params()
    build = functools.partial(nt.build_kernel, bm.slow_mlp_fn, params, bm.data(40),
                              block_size=8, vmap_axes=0, progress=False)  # fmt: skip
    again = build(path=path)
    assert (again.skipped, again.computed) == (kept, 15 - kept)
    resumed = nt.open_kernel(path).compute()
    # AUTO was decided once, before the kill, and reused by the resume; an uninterrupted
    # build of another store could time the candidates differently, so it is given that choice
    chosen = int(KernelStore.open(path).meta["auto_implementation"])
    clean = str(tmp_path / "clean.zarr")
    build(path=clean, implementation=chosen)
    np.testing.assert_array_equal(resumed, nt.open_kernel(clean).compute())


def _conv_relu():
    from bigntk import stax

    init_fn, apply_fn, _ = stax.serial(
        stax.Conv(4, (3, 3), padding="SAME"), stax.Relu(), stax.Flatten(), stax.Dense(2)
    )
    _, params = init_fn(jax.random.PRNGKey(0), (-1, 6, 6, 1))
    return apply_fn, jax.tree.map(lambda a: a.astype(np.float32), params)


@pytest.mark.parametrize("model", ["mlp", "conv_relu"])
@pytest.mark.parametrize("diagonal", [False, True])
def test_sharded_block_kernel_gives_the_same_numbers(model, diagonal):
    from bigntk.build._compute import BlockKernel

    if model == "mlp":
        f, params = bm.mlp()
        x1, x2 = bm.data(8, seed=1), bm.data(8, seed=2)
    else:  # the SPMD partitioner got this one wrong (jax 0.10, CPU): shard_map must not
        f, params = _conv_relu()
        rng = np.random.default_rng(0)
        x1, x2 = (rng.standard_normal((8, 6, 6, 1)).astype(np.float32) for _ in range(2))
    devices = jax.devices()
    assert len(devices) == 4  # conftest: jax_num_cpu_devices
    settings = dict(kinds=("ntk", "nngp"), trace_axes=(), diagonal_axes=(0,) if diagonal else (),
                    vmap_axes=0, implementation=1, block=8, diagonal=diagonal)  # fmt: skip
    one = BlockKernel(f, params, devices=devices[:1], **settings)
    four = BlockKernel(f, params, devices=devices, **settings)
    for second in (x2, None):
        expected, got = one(x1, second), four(x1, second)
        for kind in ("ntk", "nngp"):
            np.testing.assert_allclose(got[kind], expected[kind], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the 4 local devices"):
        BlockKernel(f, params, devices=devices, **{**settings, "block": 6})


@pytest.mark.parametrize("diagonal", [False, True])
def test_auto_in_the_block_kernel_is_timed_on_concrete_rows_not_predicted(diagonal, caplog):
    import logging

    from bigntk.build._compute import BlockKernel

    f, params = bm.mlp()
    x1, x2 = bm.data(8, seed=1), bm.data(8, seed=2)
    settings = dict(kinds=("ntk",), trace_axes=(-1,), diagonal_axes=(0,) if diagonal else (),
                    vmap_axes=0, block=8, diagonal=diagonal)  # fmt: skip
    devices = jax.devices()
    auto = BlockKernel(f, params, devices=devices, implementation=0, **settings)
    plain = BlockKernel(f, params, devices=devices[:1], implementation=1, **settings)
    with caplog.at_level(logging.DEBUG, logger="bigntk.empirical.auto"):
        got = auto(x1, x2)["ntk"]
    np.testing.assert_allclose(got, plain(x1, x2)["ntk"], rtol=1e-5, atol=1e-5)
    decisions = [r.getMessage() for r in caplog.records if "AUTO chose" in r.getMessage()]
    assert len(decisions) == 1, decisions  # one decision, made before the sharded program
    assert "(estimate)" not in decisions[0]


def test_auto_is_decided_once_per_store_and_a_resume_reuses_it(tmp_path, caplog):
    """Every block of an AUTO build uses one implementation, recorded in the store; the
    worker that timed it computes blocks too, with the program an explicit build runs."""
    f, params = bm.mlp()
    x = bm.data(14, seed=3)
    path = str(tmp_path / "k.zarr")
    with caplog.at_level(logging.INFO, logger="bigntk.build._scheduler"):
        nt.build_kernel(f, params, x, path=path, block_size=8, progress=False, implementation=0)
    store = StoreWriter.open(path)
    chosen = store.meta["auto_implementation"]
    assert chosen in (1, 2, 3)
    decided = [r.getMessage() for r in caplog.records if "AUTO chose" in r.getMessage()]
    pids = {w["pid"] for w in store.meta["timings"]["workers"]}
    assert len(decided) == 1 and any(f"worker pid {p}," in decided[0] for p in pids), decided
    explicit = str(tmp_path / "explicit.zarr")
    nt.build_kernel(f, params, x, path=explicit, block_size=8, progress=False,
                    implementation=chosen)  # fmt: skip
    np.testing.assert_array_equal(nt.open_kernel(path).compute(),
                                  nt.open_kernel(explicit).compute())  # fmt: skip
    # pretend the first run chose another implementation, and lose every block
    other = 2 if chosen != 2 else 1
    store.update_meta(auto_implementation=other)
    done = store.committed()
    blocks = np.argwhere(done)
    store.commit(blocks, np.zeros_like(done))
    resumed = nt.build_kernel(f, params, x, path=path, block_size=8, progress=False,
                              implementation=0)  # fmt: skip
    assert resumed.computed == len(blocks)
    assert KernelStore.open(path).meta["auto_implementation"] == other  # not decided again
    want = reference(f, params, x, None, implementation=other).ntk
    got = nt.open_kernel(path).compute()
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
