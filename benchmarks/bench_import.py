"""Import time of ``import bigntk`` in fresh processes, and which heavy libraries it loads.

Usage::

    python benchmarks/bench_import.py [--runs 9] [--tree PATH ...] [--module bigntk]

Each ``--tree`` is a checkout of bigntk put first on ``PYTHONPATH`` (default: this
checkout), so two commits compare side by side in one run, e.g. a worktree of the
previous commit against this one. Prints one JSON line per tree: the median and
minimum wall time of ``import bigntk`` (or of ``--module``, e.g.
``bigntk.build._worker``, what a build's worker process imports, or ``bigntk.solve``,
a solver actor's), of ``import jax`` alone (the floor), and the heavy libraries loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

HEAVY = ("jax", "ray", "zarr", "dask", "scipy", "xarray", "pandas", "fsspec", "yaml", "pydantic")
PROBE = """
import sys, time
t = time.perf_counter()
import {module}
elapsed = time.perf_counter() - t
print(elapsed, ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def time_import(module: str, tree: pathlib.Path, runs: int) -> tuple[list[float], str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "JAX_PLATFORMS": "cpu"}
    times, loaded = [], ""
    for _ in range(runs):
        code = PROBE.format(module=module, heavy=HEAVY)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True
        )
        if out.returncode:
            raise RuntimeError(out.stderr)
        elapsed, loaded = out.stdout.split()[0], (out.stdout.split() + [""])[1]
        times.append(float(elapsed))
    return times, loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    here = pathlib.Path(__file__).resolve().parents[1]
    parser.add_argument("--tree", action="append", type=pathlib.Path, default=None)
    parser.add_argument("--module", default="bigntk")
    args = parser.parse_args()
    for tree in args.tree or [here]:
        jax_times, _ = time_import("jax", tree, args.runs)
        times, loaded = time_import(args.module, tree, args.runs)
        label = "bigntk" if args.module == "bigntk" else "module"
        print(
            json.dumps(
                {
                    "tree": str(tree),
                    **({"module": args.module} if label == "module" else {}),
                    f"import_{label}_median_s": round(statistics.median(times), 3),
                    f"import_{label}_min_s": round(min(times), 3),
                    "import_jax_median_s": round(statistics.median(jax_times), 3),
                    "loaded": loaded.split(","),
                    "runs": args.runs,
                }
            )
        )


if __name__ == "__main__":
    main()
