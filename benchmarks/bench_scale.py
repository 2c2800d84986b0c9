"""Scheduler, manifest and store overhead per block, from 10^2 to 10^5 blocks.

    .venv/bin/python benchmarks/bench_scale.py [--max-blocks 100000]

The kernel is (almost) free: ``f(p, x) = x @ p`` with 2 features and 8x8
blocks, so a build's wall time is the builder's own cost: Ray round trips,
reading input rows, Zarr chunk writes, manifest commits, progress. Each size is
a fresh rectangular build in one local Ray. Printed per size: the Ray tasks
the blocks were sent in (short blocks go several to a task), time per block
(flat = no super-linear bookkeeping), the driver's CPU per block
(``time.process_time()``, all its threads), and the driver's resident
memory after the build and its peak so far (bounded = no per-block state kept
beyond the manifest bitmap).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import ray

import bigntk as nt

BLOCK = 8


def f(p, x):
    return x @ p


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-blocks", type=int, default=100_000)
    args = parser.parse_args()
    params = jnp.ones((2, 1), jnp.float32)
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    rows = []
    try:
        grids = [round(math.sqrt(10**k)) for k in range(2, 9)]  # ~10^2, 10^3, ... blocks
        for grid in (g for g in grids if g * g <= args.max_blocks):
            n = grid * BLOCK
            x = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
            path = tempfile.mkdtemp(suffix=".zarr")
            try:
                cpu = time.process_time()
                r = nt.build_kernel(f, params, x, x.copy(), path=path, block_size=BLOCK,
                                    progress=False, overwrite=True)  # fmt: skip
                cpu = time.process_time() - cpu
            finally:
                shutil.rmtree(path, ignore_errors=True)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            work = r.wall_s - r.workers_start_s
            rows.append((grid * grid, r.computed, r.tasks, work, cpu, rss_mib(), peak))
            print(
                f"{grid * grid} blocks in {r.tasks} tasks: {1000 * work / r.computed:.2f} "
                f"ms/block, driver CPU {1000 * cpu / r.computed:.2f} ms/block",
                flush=True,
            )
    finally:
        ray.shutdown()
    machine = f"{platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs"
    print(f"\n{machine}; jax {jax.__version__}, ray {ray.__version__}; block {BLOCK}x{BLOCK}\n")
    print("| blocks | tasks | build after workers ready (s) | ms / block | driver CPU ms / block "
          "(whole call) | driver RSS (MiB) | driver peak RSS (MiB) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for blocks, computed, tasks, work, cpu, rss, peak in rows:
        assert computed == blocks
        print(
            f"| {blocks} | {tasks} | {work:.1f} | {1000 * work / blocks:.2f} | "
            f"{1000 * cpu / blocks:.2f} | {rss:.0f} | {peak:.0f} |"
        )


if __name__ == "__main__":
    main()
