"""Running a build's pending blocks on Ray worker actors, and what the run did.

:func:`run_blocks` starts the worker actors, keeps a bounded number of blocks
in flight (``ray.wait``), retries failed blocks, replaces dead actors, records
finished blocks in the store's manifest in batches, shows progress (blocks,
entries/s) and returns a :class:`BuildResult`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
import time
from collections import deque
from typing import Any

import jax
import numpy as np

from bigntk.build._data import MemorySource
from bigntk.build._failures import death_cause, error_summary, start_workers
from bigntk.build._worker import BlockWorker
from bigntk.empirical import NtkImplementation, as_implementation
from bigntk.errors import BlockFailedError
from bigntk.store import forwarded_env, source_urls

logger = logging.getLogger(__name__)

_COMMIT_EVERY_S = 0.5
_MAX_RETRIES = 2


@dataclasses.dataclass
class BuildResult:
    """What a build did.

    Attributes:
        path: the store.
        total: blocks in the plan.
        computed: blocks computed by this run.
        skipped: blocks already committed (resumed).
        wall_s: wall time from planning to the last commit (workers' start included).
        ray_start_s: time spent starting Ray (0 when it was already running).
        workers_start_s: time until every worker actor was ready (part of ``wall_s``).
        entries: kernel entries (rows × columns) computed by this run.
    """

    path: str
    total: int
    computed: int
    skipped: int
    wall_s: float
    ray_start_s: float
    workers_start_s: float
    entries: int

    @property
    def entries_per_s(self) -> float:
        return self.entries / self.wall_s if self.wall_s else 0.0

    def summary(self) -> str:
        return (
            f"bigntk: {self.path}: {self.computed} blocks computed, {self.skipped} resumed, "
            f"{self.total} total in {self.wall_s:.1f}s ({self.entries_per_s:,.0f} entries/s; "
            f"workers start {self.workers_start_s:.1f}s, Ray start {self.ray_start_s:.1f}s)"
        )


def _worker_env() -> dict[str, str]:
    """Environment of worker processes: the driver's x64 setting, huge pages for malloc."""
    env = {"JAX_ENABLE_X64": "1" if jax.config.jax_enable_x64 else "0"}
    # Jacobian-heavy blocks page-fault less with huge pages (~30% faster on CPU)
    env["GLIBC_TUNABLES"] = os.environ.get("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    return env


def run_blocks(
    store, model, settings, s1, s2, workers, placement, progress, ray_start_s, max_deaths=3
) -> BuildResult:
    """Compute and commit the blocks ``store`` lacks; ``model`` is ``(f, params, kwargs)``."""
    import ray
    from tqdm.auto import tqdm

    plan = store.plan
    done = store.committed()
    pending = deque(map(tuple, plan.pending(done)))
    skipped = plan.num_blocks - len(pending)
    start = time.perf_counter()
    show = progress and sys.stderr.isatty()
    bar = tqdm(total=plan.num_blocks, initial=skipped, unit="block", disable=not show,
               desc="bigntk build", dynamic_ncols=True)  # fmt: skip
    computed = entries = 0
    workers_start_s = 0.0
    if pending:
        sources = [s.for_workers() if isinstance(s, MemorySource) else s for s in (s1, s2)]
        model_ref = ray.put(model)
        actor_cls = ray.remote(BlockWorker).options(
            **placement.options,
            runtime_env={"env_vars": {**_worker_env(), **placement.env,
                                      **forwarded_env([store.path, *source_urls(s1, s2)])}},
        )  # fmt: skip

        def actor(with_settings: dict):
            return actor_cls.remote([model_ref], with_settings, store.path, *sources)

        settings = _resolve_auto(store, settings, actor, pending[0])
        new_actor = functools.partial(actor, settings)
        actors, infos = start_workers(new_actor, min(workers, len(pending)))  # all ready
        workers_start_s = time.perf_counter() - start
        computed, entries = _schedule(store, plan, done, pending, actors, new_actor, bar, skipped,
                                      max_deaths)  # fmt: skip
        store.update_meta(
            timings={
                "last_run_s": time.perf_counter() - start,
                "workers_start_s": workers_start_s,
                "workers": infos,
                "device_kinds": sorted({str(i.get("device_kind")) for i in infos}),
                "placement": placement.summary(),
            }
        )
        for actor in actors:
            ray.kill(actor)
    bar.close()
    result = BuildResult(
        path=store.path,
        total=plan.num_blocks,
        computed=computed,
        skipped=skipped,
        wall_s=time.perf_counter() - start,
        ray_start_s=ray_start_s,
        workers_start_s=workers_start_s,
        entries=entries,
    )
    (tqdm.write if show else logger.info)(result.summary())
    return result


def _resolve_auto(store, settings: dict, actor, block: tuple[int, int]) -> dict:
    """Settings with AUTO replaced by one implementation for the whole build.

    Timings vary between runs, so AUTO is decided once per store: by one worker,
    timed on a pending block, and recorded in the store's attributes
    (``auto_implementation``), where a resumed build reads it back. Every block
    is therefore computed by the same implementation, and a resumed build equals
    an uninterrupted one bit for bit.
    """
    import ray

    if as_implementation(settings["implementation"]) != NtkImplementation.AUTO:
        return settings
    chosen = store.meta.get("auto_implementation")
    attempt = 0
    while chosen is None:
        probe = actor(settings)
        try:
            chosen = ray.get(probe.choose.remote(*map(int, block)))
        except ray.exceptions.RayActorError:  # killed while timing: another worker decides
            if attempt == _MAX_RETRIES:
                raise
            attempt += 1
            logger.warning("The worker timing AUTO's candidates died; trying another one.")
            continue
        finally:
            ray.kill(probe)
        store.update_meta(auto_implementation=chosen)
        logger.info("AUTO chose %s for this build.", NtkImplementation(chosen).name)
    return {**settings, "implementation": int(chosen)}


def _entries(plan, block: tuple[int, int]) -> int:
    """Kernel entries a block fills (its mirror included)."""
    (r0, r1), (c0, c1) = plan.rows(block[0]), plan.cols(block[1])
    if plan.diagonal:
        return r1 - r0
    mirrored = plan.symmetric and block[0] != block[1]
    return (r1 - r0) * (c1 - c0) * (2 if mirrored else 1)


def _schedule(
    store, plan, done, pending, actors, new_actor, bar, skipped, max_deaths
) -> tuple[int, int]:
    """Run the pending blocks on ``actors``, replacing dead ones with ``new_actor()``.

    A block whose worker dies ``max_deaths`` times (its process killed, out of
    memory, crashed) stops the build; a block that keeps killing its worker
    would otherwise loop forever. An actor runs one task at a time, so a death
    is counted against the oldest block in flight on it (the one running);
    the blocks queued behind it are only requeued.
    """
    import ray

    in_flight: dict[Any, tuple[tuple[int, int], int, Any, int, int]] = {}
    load = [0] * len(actors)
    tries: dict[tuple[int, int], int] = {}
    deaths: dict[tuple[int, int], int] = {}
    submitted = 0
    to_commit: list[tuple[int, int]] = []
    last_commit = time.perf_counter()
    computed = entries = 0
    limit = 2 * len(actors)
    while pending or in_flight:
        while pending and len(in_flight) < limit:
            block = pending.popleft()
            a = int(np.argmin(load))
            ref = actors[a].compute.remote(*map(int, block))
            in_flight[ref] = (block, a, actors[a], tries.get(block, 0), submitted)
            submitted += 1
            load[a] += 1
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        for ref in ready:
            block, a, handle, attempt, order = in_flight.pop(ref)
            load[a] -= 1
            try:
                stats = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                pending.appendleft(block)
                if actors[a] is not handle:  # a later task of an actor already replaced
                    continue
                ray.kill(handle)
                actors[a] = new_actor()
                running = min([(order, block)] + [(v[4], v[0]) for v in in_flight.values()
                                                  if v[2] is handle])[1]  # fmt: skip
                deaths[running] = deaths.get(running, 0) + 1
                if deaths[running] >= max_deaths:
                    store.commit(np.array(to_commit).reshape(-1, 2), done)
                    raise BlockFailedError(
                        f"Block {tuple(map(int, running))} killed its worker {deaths[running]} "
                        f"times ({death_cause(e)}); the {int(done.sum())} committed blocks are "
                        f"kept in {store.path}. A block that kills its process usually runs it "
                        "out of memory: use a smaller block_size (or workers with more memory), "
                        "then run the same build again to resume."
                    ) from e
                logger.warning(
                    "A worker died while computing block %s (%s); recomputing it.",
                    running, death_cause(e),
                )  # fmt: skip
                continue
            except ray.exceptions.RayTaskError as e:
                if attempt >= _MAX_RETRIES:
                    store.commit(np.array(to_commit).reshape(-1, 2), done)
                    raise BlockFailedError(
                        f"Block {tuple(map(int, block))} failed {attempt + 1} times; the "
                        f"{int(done.sum())} committed blocks are kept in {store.path}. Last "
                        f"error: {error_summary(e)}"
                    ) from e
                tries[block] = attempt + 1
                pending.append(block)
                continue
            done[block] = True
            store.checksums.record(block, stats.get("checksums"))
            to_commit.append(block)
            computed += 1
            entries += _entries(plan, block)
            bar.update(1)
        if to_commit and (time.perf_counter() - last_commit > _COMMIT_EVERY_S or not in_flight):
            store.commit(np.array(to_commit), done)
            to_commit.clear()
            last_commit = time.perf_counter()
            rate = entries / max(bar.format_dict["elapsed"], 1e-9)
            bar.set_postfix_str(f"{rate:,.0f} entries/s, {skipped} resumed")
    return computed, entries
