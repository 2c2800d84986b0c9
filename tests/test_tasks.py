"""Tasks of several blocks: short blocks are sent to a worker several at a time.

The driver's cost is per Ray task, so the scheduler groups blocks that take
much less than ``_TASK_SECONDS`` (timed by the workers). A group changes no
value and no failure rule: a group that raises is split, each block rerun
alone, so that the block that fails is the one named.
"""

import cloudpickle
import numpy as np
import pytest

from bigntk.build import _scheduler
from bigntk.errors import BlockFailedError
from bigntk.store import KernelStore
from tests import faults

cloudpickle.register_pickle_by_value(faults)


def _stats(seconds):
    return [{"read_s": 0.0, "compute_s": s, "write_s": 0.0} for s in seconds]


def test_task_size_waits_for_a_timing_then_fills_tasks_of_task_seconds():
    size = _scheduler._TaskSize(slots=4)
    assert size(1000) == 1  # nothing timed yet: one block per task
    size.record(_stats([0.1] * 5))
    assert size(1000) == round(_scheduler._TASK_SECONDS / 0.1)
    assert size(40) == 10  # 40 blocks over 4 places in flight: no worker left without a task
    assert size(3) == 1
    size.record(_stats([0.001] * 16))  # the last 16 blocks are timed: the old ones drop out
    assert size(10**6) == _scheduler._TASK_BLOCKS_AT_MOST
    size.record(_stats([5.0] * 16))
    assert size(10**6) == 1  # long blocks: one per task


def test_task_size_is_the_median_so_a_compile_does_not_decide_it():
    size = _scheduler._TaskSize(slots=2)
    size.record(_stats([30.0, 0.2, 0.2]))  # the first block of a worker compiles
    assert size(1000) == 10


@pytest.fixture
def takes(monkeypatch):
    """The blocks of every task the scheduler submits (a spy on ``_Schedule._take``)."""
    seen = []
    take = _scheduler._Schedule._take

    def spy(self, size):
        blocks = take(self, size)
        seen.append(blocks)
        return blocks

    monkeypatch.setattr(_scheduler._Schedule, "_take", spy)
    return seen


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.xdist_group("ray")
def test_grouped_tasks_give_the_same_store_bit_for_bit(tmp_path, monkeypatch, takes):
    monkeypatch.setattr(_scheduler, "_TASK_SECONDS", 0.0)  # one block per task
    single = faults.build(tmp_path / "single.zarr", delay=0, workers=1)
    assert single.computed == single.tasks == 21 and max(map(len, takes)) == 1
    assert single.workers == 1 and set(single.worker_s) == {"read", "compute", "write"}
    assert all(seconds > 0 for seconds in single.worker_s.values())
    assert 0 < single.worker_busy <= 1 and single.worker_s["compute"] < single.wall_s
    takes.clear()
    monkeypatch.setattr(_scheduler, "_TASK_SECONDS", 1e3)  # as many as the queue allows
    grouped = faults.build(tmp_path / "grouped.zarr", delay=0, workers=1)
    assert grouped.computed == 21 and grouped.tasks == len(takes) < 21
    mask = KernelStore.open(str(tmp_path / "grouped.zarr")).plan.mask()
    assert sorted(b for t in takes for b in t) == sorted(map(tuple, np.argwhere(mask).tolist()))
    assert max(map(len, takes)) >= 5, takes  # 19 blocks after the first two, 2 in flight
    assert faults.compare(tmp_path / "grouped.zarr", tmp_path / "single.zarr")["identical"]


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.xdist_group("ray")
def test_a_group_that_raises_is_split_and_the_failing_block_named(tmp_path, monkeypatch, takes):
    monkeypatch.setattr(_scheduler, "_TASK_SECONDS", 1e3)
    trigger = tmp_path / "fail-now"
    trigger.touch()
    path = tmp_path / "k.zarr"
    with pytest.raises(BlockFailedError, match=r"Block \(3, 0\) failed 3 times"):
        faults.build(path, shape="rect", trigger=str(trigger), delay=0, workers=1)
    grouped = [t for t in takes if (3, 0) in t and len(t) > 1]
    assert grouped, takes  # (3, 0) first ran in a group, then alone
    alone = [t for t in takes if t == ((3, 0),)]
    assert len(alone) == 3  # each failure counted against (3, 0) alone, never the group's
    done = KernelStore.open(str(path)).committed()
    assert not done[3, 0] and done.sum() >= 2  # what finished before the stop is committed
