"""The Ray actor that computes blocks and writes them to the store.

Each actor builds its model and the compiled kernel program once, reads its own
input rows from the data sources, computes a block (or several, one task of the
driver's), writes it (and, in a format-1 store, its mirror) to the store, and
returns only small statistics to the driver.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import jax

from bigntk.build._compute import BlockKernel
from bigntk.build._data import Source
from bigntk.build._settings import KernelSettings
from bigntk.store import StoreWriter


class BlockWorker:
    """Computes and writes blocks; runs as a Ray actor (or in-process for tests/verify).

    Args:
        model: ``(f, params, kwargs)``, or a one-element list holding a Ray
            reference to it (fetched here, so that Ray can restart the actor).
        settings: the build's kernel settings.
        path: the store's path.
        x1, x2: data sources (``x2`` None for symmetric builds).
    """

    def __init__(
        self, model: tuple, settings: KernelSettings, path: str, x1: Source, x2: Source | None
    ):
        start = time.perf_counter()
        if isinstance(model, list):
            import ray

            model = ray.get(model[0])
        f, params, kwargs = model
        self.model, self.settings = (f, params, kwargs), settings
        self.kernel = BlockKernel.from_settings(f, params, kwargs, settings)
        self.store = StoreWriter.open(path)
        self.x1, self.x2 = x1, x2 if x2 is not None else x1
        self.plan = self.store.plan
        self.setup_s = time.perf_counter() - start

    def info(self) -> dict[str, Any]:
        """Where this worker runs: host, pid, JAX devices."""
        devices = self.kernel.devices
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device_kind": devices[0].device_kind,
            "platform": devices[0].platform,
            "devices": len(devices),
            "setup_s": self.setup_s,
            "jax": jax.__version__,
            "xla_env": {k: v for k, v in os.environ.items() if k.startswith("XLA_PYTHON_CLIENT")},
        }

    def adopt(self, settings: KernelSettings) -> dict[str, Any]:
        """Compute with ``settings`` from now on (the build's, once :meth:`choose` decided
        AUTO); :meth:`info`. The kernel program is made anew from them, as a new worker's
        is, so the worker that timed AUTO computes blocks too instead of being replaced
        (one process start and import fewer per build)."""
        if settings != self.settings:
            start = time.perf_counter()
            self.kernel = BlockKernel.from_settings(*self.model, settings)
            self.settings = settings
            self.setup_s += time.perf_counter() - start
        return self.info()

    def choose(self, bi: int, bj: int) -> int:
        """AUTO's implementation for this build, timed on block ``(bi, bj)`` here."""
        r0, r1 = self.plan.rows(bi)
        c0, c1 = self.plan.cols(bj)
        same = bi == bj and self.x2 is self.x1
        x2 = None if same else self.x2.read(c0, c1)
        return int(self.kernel.choose(self.x1.read(r0, r1), x2))

    def compute(self, bi: int, bj: int) -> dict[str, Any]:
        """Compute block ``(bi, bj)``, write it to the store; return timings and checksums."""
        t0 = time.perf_counter()
        r0, r1 = self.plan.rows(bi)
        c0, c1 = self.plan.cols(bj)
        x1 = self.x1.read(r0, r1)
        same = bi == bj and self.x2 is self.x1  # a diagonal block of K(x, x)
        x2 = None if same else self.x2.read(c0, c1)
        t1 = time.perf_counter()
        values = self.kernel(x1, x2)
        if self.plan.symmetric and bi == bj:
            values = {k: self.store.symmetrize(v) for k, v in values.items()}
        t2 = time.perf_counter()
        sums = self.store.write_block(bi, bj, values)
        t3 = time.perf_counter()
        return {"read_s": t1 - t0, "compute_s": t2 - t1, "write_s": t3 - t2, "checksums": sums}

    def compute_blocks(self, blocks: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """:meth:`compute` each of ``blocks`` in turn (one task for several blocks); their stats.

        A block that raises ends the task; the blocks before it were written but are
        not committed by the driver, which reruns them (see
        :mod:`bigntk.build._scheduler`).
        """
        return [self.compute(int(bi), int(bj)) for bi, bj in blocks]
