"""Builder efficiency: Ray + Zarr build vs computing the same blocks in one process.

    .venv/bin/python benchmarks/bench_builder.py [--quick]

For each case it measures, on this machine:
- ``in-process``: every block of the plan computed sequentially with the same
  compiled kernel program (``BlockKernel``), one compile included, no I/O;
- ``build``: ``bigntk.build_kernel`` wall time once its worker is ready
  (compile, scheduling, Zarr writes, manifest); Ray's and the worker's
  start-up are reported separately;
- efficiency = in-process / build, and the per-block overhead
  (build - in-process) / blocks.
Also the symmetric build's time over the rectangular build of the same size.
Prints a Markdown table (paste it into benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile
import time

import jax
import numpy as np
import ray

import bigntk as nt
from bigntk import stax
from bigntk.build._compute import BlockKernel
from bigntk.store import Plan


def fcn(width: int, features: int, depth: int = 2):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, b_std=0.1), stax.Relu()]
    init_fn, apply_fn, _ = stax.serial(*layers, stax.Dense(1, b_std=0.1))
    _, params = init_fn(jax.random.PRNGKey(0), (-1, features))
    return apply_fn, params


def in_process(f, params, x, block: int, symmetric: bool) -> tuple[float, float, int]:
    """(total seconds incl. one compile, median block seconds, blocks)."""
    kernel = BlockKernel(f, params, ("ntk",), (-1,), (), 0, 1, block)
    same = symmetric  # diagonal blocks of K(x, x) share x's derivatives, as in the build
    plan = Plan(len(x), len(x), block, symmetric=symmetric)
    blocks = plan.pending(np.zeros(plan.grid, bool))
    times = []
    start = time.perf_counter()
    for bi, bj in blocks:
        t = time.perf_counter()
        x1 = x[slice(*plan.rows(bi))]
        kernel(x1, None if same and bi == bj else x[slice(*plan.cols(bj))])
        times.append(time.perf_counter() - t)
    return time.perf_counter() - start, float(np.median(times)), len(blocks)


def build(f, params, x, block: int, symmetric: bool) -> tuple[float, int]:
    path = tempfile.mkdtemp(suffix=".zarr")
    try:
        r = nt.build_kernel(f, params, x, None if symmetric else x.copy(), path=path,
                            block_size=block, progress=False, overwrite=True)  # fmt: skip
        return r.wall_s - r.workers_start_s, r.computed
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n = 1024 if args.quick else 4096
    cases = [
        ("~1 s blocks", fcn(256, 64), 512),
        ("~50 ms blocks", fcn(256, 64), 128),
        ("tiny blocks (overhead)", fcn(8, 4), 64),
    ]
    t = time.perf_counter()
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    ray_start = time.perf_counter() - t
    rows = []
    try:
        for name, (f, params), block in cases:
            feats = jax.tree.leaves(params)[0].shape[0]
            x = np.random.default_rng(0).standard_normal((n, feats)).astype(np.float32)
            for symmetric in (False, True):
                base, median, blocks = in_process(f, params, x, block, symmetric)
                wall, computed = build(f, params, x, block, symmetric)
                assert computed == blocks
                rows.append((name, "sym" if symmetric else "rect", blocks, median, base, wall))
    finally:
        ray.shutdown()
    machine = f"{platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs"
    versions = f"jax {jax.__version__}, ray {ray.__version__}"
    print(f"\n{n} x {n} NTK, FCN, 1 worker; {machine}; {versions}; Ray start {ray_start:.1f} s\n")
    print("| case | kind | blocks | median block (s) | in-process (s) | build (s) | "
          "efficiency | overhead / block (ms) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, kind, blocks, median, base, wall in rows:
        print(f"| {name} | {kind} | {blocks} | {median:.3f} | {base:.1f} | {wall:.1f} | "
              f"{base / wall:.2f} | {1000 * (wall - base) / blocks:.1f} |")  # fmt: skip
    for name in dict.fromkeys(r[0] for r in rows):
        rect, sym = (r[5] for r in rows if r[0] == name)
        print(f"\n{name}: symmetric / rectangular build time = {sym / rect:.2f}")


if __name__ == "__main__":
    main()
