"""Fault injection, the fast seeded subset (every fault, repeated: benchmarks/bench_faults.py).

Killed drivers and workers are tested in test_build.py and test_lease.py; here:
a worker raising on one block, a full disk, stale ``.partial`` files and a
truncated chunk file. The standard problems are in ``tests/faults.py``.
"""

import os
import pathlib
import random
import signal
import threading

import cloudpickle
import numpy as np
import pytest

import bigntk as nt
from bigntk.errors import BlockFailedError
from bigntk.store import KernelStore, scan
from tests import faults

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.xdist_group("ray")]
cloudpickle.register_pickle_by_value(faults)


def _kernel(path):
    return nt.open_kernel(str(path)).compute()


def test_worker_raising_on_one_block_is_retried_then_named_and_committed_blocks_stay(tmp_path):
    reference = tmp_path / "ref.zarr"
    faults.build(reference, shape="rect", delay=0)
    trigger = tmp_path / "fail-now"
    trigger.touch()
    path = tmp_path / "k.zarr"
    with pytest.raises(BlockFailedError, match=r"Block \(3, 0\) failed 3 times") as e:
        faults.build(path, shape="rect", trigger=str(trigger), delay=0)
    assert "injected fault" in str(e.value)
    kept = faults.committed(path)
    assert not KernelStore.open(str(path)).committed()[3, 0]
    assert faults.compare(path, reference)["lost"] == 0  # what is committed is right
    trigger.unlink()  # the fault is gone: the same build resumes
    again = faults.build(path, shape="rect", trigger=str(trigger), delay=0)
    assert (again.skipped, again.computed) == (kept, 6 - kept) and again.computed >= 1
    np.testing.assert_array_equal(_kernel(path), _kernel(reference))


@pytest.mark.parametrize("seed", [0])  # more seeds: benchmarks/bench_faults.py
def test_stale_partials_and_a_truncated_chunk_are_repaired_bit_for_bit(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "k.zarr"
    faults.build(path, delay=0)
    clean = _kernel(path)
    partials = faults.plant_partials(str(path), rng, count=3)
    victim = faults.truncate_random_chunk(str(path), rng)
    problems = scan(KernelStore.open(str(path))).problems
    assert len(problems) == 1 and problems[0].what in ("unreadable", "missing", "differs")
    bi, bj = map(int, victim.relative_to(path / "ntk" / "c").parts)
    assert problems[0].block == (min(bi, bj), max(bi, bj))  # the block owning the chunk
    resumed = faults.build(path, delay=0)  # a plain resume: removes the partial files only
    assert resumed.computed == 0 and not any(p.exists() for p in partials)
    repaired = faults.build(path, delay=0, repair=True)
    assert repaired.computed == 1
    np.testing.assert_array_equal(_kernel(path), clean)
    assert not list(pathlib.Path(path).rglob("*.partial"))


def test_disk_full_stops_with_a_clear_error_and_resumes_once_space_is_freed(tmp_path):
    if not faults.can_mount_tmpfs():
        pytest.skip("no size-limited filesystem: `unshare -rm` cannot mount a tmpfs here")
    out = faults.run_disk_full(str(tmp_path), size="96k", delay=0.03)
    assert "error" not in out, out
    assert out["first"].startswith("StoreFullError") and "disk is full" in out["first"]
    assert "run the same build again to resume" in out["first"]
    assert 0 <= out["committed_when_full"] < out["total"] == 21  # (0: full before 1st commit)
    assert out["skipped"] == out["committed_when_full"]
    assert out["complete"] and out["identical"] and out["lost"] == 0


def test_a_worker_killed_while_starting_is_replaced(tmp_path):
    path = tmp_path / "k.zarr"
    outcome = {}

    def run():
        try:
            outcome["result"] = faults.build(path, delay=0)
        except Exception as e:  # reported below
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    assert faults.wait_for(lambda: faults.worker_pids(os.getpid()), 120, poll=0.01)
    assert faults.committed(path) == 0  # still starting: no block done yet
    for pid in faults.worker_pids(os.getpid()):
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout=180)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].computed == 21
    assert not scan(KernelStore.open(str(path))).problems
