"""Running a build's pending blocks on Ray worker actors, and what the run did.

:func:`run_blocks` starts the worker actors (a :class:`~bigntk.build._pool.WorkerPool`,
which also holds the retry policy: dead actors replaced, deaths and failures
counted per block), keeps a bounded number of tasks in flight (``ray.wait``; a task is
one block, or several when blocks are short),
records finished blocks in the store's manifest in batches, shows progress
(blocks, entries/s) and returns a :class:`BuildResult`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from bigntk.build._data import MemorySource, Source
from bigntk.build._pool import WorkerPool, kill
from bigntk.build._resources import Placement
from bigntk.build._result import BuildResult
from bigntk.build._settings import KernelSettings
from bigntk.build._worker import BlockWorker
from bigntk.empirical import NtkImplementation
from bigntk.errors import BlockFailedError
from bigntk.store import StoreWriter, forwarded_env, source_urls

logger = logging.getLogger(__name__)

# Commits: at least every 0.5 s, and in a long build every 2% of its elapsed time up to
# 10 s, so that committing costs the driver ~0.1-0.2% of a long build (a commit is
# ~4-10 ms of zarr writes and the lease check) while a crash loses at most 2% of the
# work done (or 0.5 s, or 10 s) to recomputation.
_COMMIT_EVERY_S = 0.5
_COMMIT_SHARE = 0.02
_COMMIT_AT_MOST_S = 10.0
# Tasks: blocks shorter than this are sent several to a task, so that the driver's ~5-10
# ms per task (Ray's submission, wait and reply) stays under ~0.5% of a build whatever
# a block costs (a cheap kernel on a GPU: tens of ms); timed on the last blocks.
_TASK_SECONDS = 2.0
_TASK_BLOCKS_AT_MOST = 64
_TIMED_BLOCKS = 16


def _worker_env() -> dict[str, str]:
    """Environment of worker processes: the driver's x64 setting, huge pages for malloc."""
    env = {"JAX_ENABLE_X64": "1" if jax.config.jax_enable_x64 else "0"}
    # Jacobian-heavy blocks page-fault less with huge pages (~30% faster on CPU)
    env["GLIBC_TUNABLES"] = os.environ.get("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    return env


def run_blocks(
    store: StoreWriter,
    model: tuple,
    settings: KernelSettings,
    sources: tuple[Source, Source | None],
    placement: Placement,
    *,
    progress: bool,
    ray_start_s: float,
    max_deaths: int = 3,
) -> BuildResult:
    """Compute and commit the blocks ``store`` lacks; ``model`` is ``(f, params, kwargs)``."""
    from tqdm.auto import tqdm

    plan = store.plan
    done = store.committed()
    pending = deque(map(tuple, plan.pending(done)))
    skipped = plan.num_blocks - len(pending)
    start = time.perf_counter()
    show = progress and sys.stderr.isatty()
    bar = tqdm(total=plan.num_blocks, initial=skipped, unit="block", disable=not show,
               desc="bigntk build", dynamic_ncols=True)  # fmt: skip
    computed = entries = tasks = workers = 0
    workers_start_s = 0.0
    worker_s: dict[str, float] = {}
    if pending:
        new_actor = _actor_factory(store, model, sources, placement)
        settings, first = _resolve_auto(store, settings, new_actor, pending[0])
        kept = lambda: f"the {int(done.sum())} committed blocks are kept in {store.path}"  # noqa: E731
        pool = WorkerPool(functools.partial(new_actor, settings), max_deaths, kept)
        try:
            infos = pool.start(min(placement.workers, len(pending)), first=first)  # all ready
            workers_start_s = time.perf_counter() - start
            schedule = _Schedule(store, done, pending, pool, bar, skipped)
            computed, entries = schedule.run()
            tasks, workers, worker_s = schedule.submitted, len(infos), schedule.worker_s
            store.update_meta(
                timings={
                    "last_run_s": time.perf_counter() - start,
                    "workers_start_s": workers_start_s,
                    "workers": infos,
                    "device_kinds": sorted({str(i.get("device_kind")) for i in infos}),
                    "placement": placement.summary(),
                }
            )
        finally:
            pool.close()
    bar.close()
    wall_s = time.perf_counter() - start
    result = BuildResult(store.path, plan.num_blocks, computed, skipped, wall_s, ray_start_s,
                         workers_start_s, entries, tasks, workers, worker_s)  # fmt: skip
    (tqdm.write if show else logger.info)(result.summary())
    return result


def _actor_factory(
    store: StoreWriter, model: tuple, sources: tuple, placement: Placement
) -> Callable[[KernelSettings], Any]:
    """``settings -> actor``: a new :class:`BlockWorker` actor of this build, placed as planned."""
    import ray

    s1, s2 = sources
    sources = tuple(s.for_workers() if isinstance(s, MemorySource) else s for s in sources)
    model_ref = ray.put(model)
    actor_cls = ray.remote(BlockWorker).options(
        **placement.options,
        # no per-task events to the GCS (the dashboard's task table): a build sends one
        # task per block or group of blocks, up to 10^5-10^6 of them, and reads none back
        enable_task_events=False,
        runtime_env={"env_vars": {**_worker_env(), **placement.env,
                                  **forwarded_env([store.path, *source_urls(s1, s2)])}},
    )  # fmt: skip

    def new_actor(settings: KernelSettings) -> Any:
        return actor_cls.remote([model_ref], settings, store.path, *sources)

    return new_actor


def _resolve_auto(
    store: StoreWriter, settings: KernelSettings, new_actor: Callable, block: tuple[int, int]
) -> tuple[KernelSettings, Any]:
    """``(settings, worker)``: the settings with AUTO replaced by one implementation for the
    whole build, and the worker that timed it (None if none did), kept to compute blocks.

    Timings vary between runs, so AUTO is decided once per store: by one worker,
    timed on a pending block, and recorded in the store's attributes
    (``auto_implementation``), where a resumed build reads it back. Every block
    is therefore computed by the same implementation, and a resumed build equals
    an uninterrupted one bit for bit. The worker that timed it then remakes its
    kernel program from the decided settings (``BlockWorker.adopt``), as every
    other worker's is made.
    """
    import ray

    if not settings.auto:
        return settings, None
    chosen = store.meta.get("auto_implementation")
    if chosen is not None:
        return settings.decided(chosen), None
    probe = WorkerPool(functools.partial(new_actor, settings))
    chosen, worker = probe.ask_one("choose", *map(int, block), warning="The worker timing "
                                   "AUTO's candidates died (%s); trying another one.")  # fmt: skip
    decided, name = settings.decided(chosen), NtkImplementation(chosen).name
    timed_by = ""
    try:
        store.update_meta(auto_implementation=chosen)
        pid = ray.get(worker.adopt.remote(decided))["pid"]
        timed_by = f" (timed by worker pid {pid}, which computes blocks too)"
    except ray.exceptions.RayActorError:
        kill(worker)  # died after answering: the pool starts another
        worker = None
    except BaseException:
        kill(worker)
        raise
    logger.info("AUTO chose %s for this build%s.", name, timed_by)
    return decided, worker


def _entries(plan, block: tuple[int, int]) -> int:
    """Kernel entries a block fills (its mirror included)."""
    (r0, r1), (c0, c1) = plan.rows(block[0]), plan.cols(block[1])
    if plan.diagonal:
        return r1 - r0
    mirrored = plan.symmetric and block[0] != block[1]
    return (r1 - r0) * (c1 - c0) * (2 if mirrored else 1)


@dataclasses.dataclass
class _Task:
    """Blocks submitted to a worker as one task: ``actor``, then in ``slot`` of the pool (it
    may since have been replaced), was the ``order``-th submission of the run; ``alone``:
    the only task its actor was given (a suspect of an earlier death)."""

    blocks: tuple[tuple[int, int], ...]
    slot: int
    actor: Any
    order: int
    alone: bool = False


class _TaskSize:
    """Blocks per task, from the blocks' measured seconds: tasks of ``_TASK_SECONDS`` or more.

    The driver's cost is per task (a Ray submission, ``ray.wait``, the reply), so
    blocks much shorter than a task are sent several at a time. Until a block has
    been timed, and for blocks of ``_TASK_SECONDS`` or more, a task is one block.
    The size never leaves a worker without a queued task: with ``pending`` blocks
    left over ``slots`` in-flight places, at most ``pending / slots`` per task.
    """

    def __init__(self, slots: int):
        self.slots = slots
        self.seconds: deque[float] = deque(maxlen=_TIMED_BLOCKS)

    def record(self, stats: list[dict[str, Any]]) -> None:
        """Seconds of each block a task computed (its worker's read, compute and write)."""
        for s in stats:
            self.seconds.append(s.get("read_s", 0.0) + s.get("compute_s", 0.0)
                                + s.get("write_s", 0.0))  # fmt: skip

    def __call__(self, pending: int) -> int:
        if not self.seconds:
            return 1
        block_s = float(np.median(self.seconds))
        wanted = math.ceil(_TASK_SECONDS / max(block_s, 1e-6) - 1e-9)  # tasks of at least that
        return max(1, min(wanted, _TASK_BLOCKS_AT_MOST, pending // self.slots))


class _Schedule:
    """The pending blocks run on a pool's actors, a bounded number of tasks in flight.

    A task is one block or several (:class:`_TaskSize`). Results are recorded in
    ``done`` and committed to the store's manifest in batches. A task of one
    block that raised is requeued until the pool's failure count stops the
    build; a task of several that raised is split, each block requeued alone
    (a ``single``), so that a failure is always counted against its own block.
    A dead actor is replaced and its blocks requeued; its death is counted
    against its block if it had one in flight, else its blocks become suspects,
    each rerun alone on an idle actor so that a block that kills its worker is
    named for sure. On :class:`~bigntk.errors.BlockFailedError` what is done is
    committed first.
    """

    def __init__(self, store, done: np.ndarray, pending: deque, pool: WorkerPool, bar, skipped):
        self.store, self.plan, self.done, self.pending = store, store.plan, done, pending
        self.pool, self.bar, self.skipped = pool, bar, skipped
        self.in_flight: dict[Any, _Task] = {}
        self.load = [0] * len(pool.actors)
        self.limit = 2 * len(pool.actors)
        self.size = _TaskSize(self.limit)
        self.suspects: set[tuple[int, int]] = set()
        self.singles: set[tuple[int, int]] = set()
        self.submitted = 0
        self.to_commit: list[tuple[int, int]] = []
        self.started = self.last_commit = time.perf_counter()
        self.computed = self.entries = 0
        self.worker_s = dict.fromkeys(("read", "compute", "write"), 0.0)

    def run(self) -> tuple[int, int]:
        """Run every pending block: ``(blocks computed, kernel entries computed)``."""
        import ray

        try:
            while self.pending or self.in_flight:
                self._submit()
                ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=self._timeout())
                for ref in ready:
                    self._collect(ref)
                self._commit_if_due()
        except BlockFailedError:
            self.store.commit(np.array(self.to_commit).reshape(-1, 2), self.done)
            raise
        return self.computed, self.entries

    def _submit(self) -> None:
        """Pending blocks to the least loaded actors, up to the in-flight limit."""
        while self.pending and len(self.in_flight) < self.limit:
            alone = self.pending[0] in self.suspects
            slot = self._slot(alone)
            if slot is None:  # a suspect waits for an idle actor
                return
            blocks = self._take(self.size(len(self.pending)))
            actor = self.pool.actors[slot]
            ref = actor.compute_blocks.remote([tuple(map(int, b)) for b in blocks])
            self.in_flight[ref] = _Task(blocks, slot, actor, self.submitted, alone)
            self.submitted += 1
            self.load[slot] += 1

    def _take(self, size: int) -> tuple[tuple[int, int], ...]:
        """The next task's blocks: up to ``size`` from the front of the queue; a suspect or a
        single goes alone (and a group stops before one)."""
        blocks = [self.pending.popleft()]
        lone = self.suspects | self.singles
        if blocks[0] in lone:
            return tuple(blocks)
        while self.pending and len(blocks) < size and self.pending[0] not in lone:
            blocks.append(self.pending.popleft())
        return tuple(blocks)

    def _slot(self, alone: bool) -> int | None:
        """The least loaded actor's slot (``alone``: an idle one), None if none fits."""
        busy = {t.slot for t in self.in_flight.values() if t.alone}
        free = [i for i in range(len(self.load)) if i not in busy]
        if alone:
            free = [i for i in free if self.load[i] == 0]
        return min(free, key=self.load.__getitem__) if free else None

    def _collect(self, ref: Any) -> None:
        """One finished task: record its blocks, or requeue them, or stop the build."""
        import ray

        task = self.in_flight.pop(ref)
        self.load[task.slot] -= 1
        try:
            stats = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            self._lost(task, e)
        except ray.exceptions.RayTaskError as e:
            if len(task.blocks) > 1:  # which block raised is unknown: each reruns alone
                self.singles.update(task.blocks)
                self.pending.extendleft(reversed(task.blocks))
                return
            self.pool.count_failure(task.blocks[0], e)  # raises after the last retry
            self.pending.append(task.blocks[0])
        else:
            self.size.record(stats)
            for block, block_stats in zip(task.blocks, stats, strict=True):
                self._record(block, block_stats)

    def _record(self, block: tuple[int, int], stats: dict[str, Any]) -> None:
        """A computed block: marked done, its checksums kept, to be committed."""
        self.suspects.discard(block)
        self.singles.discard(block)
        self.done[block] = True
        self.store.checksums.record(block, stats.get("checksums"))
        for phase in self.worker_s:
            self.worker_s[phase] += stats.get(f"{phase}_s", 0.0)
        self.to_commit.append(block)
        self.computed += 1
        self.entries += _entries(self.plan, block)
        self.bar.update(1)

    def _lost(self, task: _Task, error: BaseException) -> None:
        """``task``'s actor died: requeue its blocks; replace the actor, counting the death."""
        self.pending.extendleft(reversed(task.blocks))
        if not self.pool.holds(task.slot, task.actor):  # a later task of an actor replaced
            return
        self.pool.replace(task.slot)
        on_it = [t for t in self.in_flight.values() if t.actor is task.actor]
        blocks = [b for t in sorted([task, *on_it], key=lambda t: t.order) for b in t.blocks]
        if len(blocks) > 1:
            self.suspects.update(blocks)
        self.pool.count_death(blocks, error)  # raises after max_deaths

    def _every(self, now: float) -> float:
        """Seconds between commits: ``_COMMIT_EVERY_S``, or ``_COMMIT_SHARE`` of the elapsed
        build if longer, at most ``_COMMIT_AT_MOST_S``."""
        return min(max(_COMMIT_EVERY_S, _COMMIT_SHARE * (now - self.started)), _COMMIT_AT_MOST_S)

    def _timeout(self) -> float:
        """How long to wait for a task: until the next commit is due, if one is waiting.

        Nothing else needs the loop between results (a lost lease is seen at the next
        commit), so an idle driver wakes at most every ``_COMMIT_AT_MOST_S``.
        """
        if not self.to_commit:
            return _COMMIT_AT_MOST_S
        now = time.perf_counter()
        return min(max(0.0, self.last_commit + self._every(now) - now) + 1e-3, _COMMIT_AT_MOST_S)

    def _commit_if_due(self) -> None:
        """Commit finished blocks when none is in flight, and every :meth:`_every` seconds."""
        now = time.perf_counter()
        late = now - self.last_commit > self._every(now)
        if not self.to_commit or not (late or not self.in_flight):
            return
        self.store.commit(np.array(self.to_commit), self.done)
        self.to_commit.clear()
        self.last_commit = time.perf_counter()
        rate = self.entries / max(self.bar.format_dict["elapsed"], 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} entries/s, {self.skipped} resumed")
