"""What a build did: :class:`BuildResult`, returned by :func:`bigntk.build_kernel`."""

from __future__ import annotations

import dataclasses


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
        tasks: Ray tasks the blocks were sent in (several short blocks make one task;
            retried tasks count again).
        workers: worker actors the build started with.
        worker_s: seconds the workers spent on this run's blocks, by phase (``'read'``
            the rows, ``'compute'`` the block, ``'write'`` it to the store), summed over
            workers and blocks (blocks that failed or were lost are not counted): with
            ``wall_s`` and ``workers``, how busy the workers were.
    """

    path: str
    total: int
    computed: int
    skipped: int
    wall_s: float
    ray_start_s: float
    workers_start_s: float
    entries: int
    tasks: int = 0
    workers: int = 0
    worker_s: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def entries_per_s(self) -> float:
        return self.entries / self.wall_s if self.wall_s else 0.0

    @property
    def worker_busy(self) -> float:
        """Share of the workers' time (``workers × wall_s``) spent on blocks (nan: none ran)."""
        span = self.workers * self.wall_s
        return sum(self.worker_s.values()) / span if span else float("nan")

    def summary(self) -> str:
        return (
            f"bigntk: {self.path}: {self.computed} blocks computed, {self.skipped} resumed, "
            f"{self.total} total in {self.wall_s:.1f}s ({self.entries_per_s:,.0f} entries/s; "
            f"workers start {self.workers_start_s:.1f}s, Ray start {self.ray_start_s:.1f}s)"
        )
