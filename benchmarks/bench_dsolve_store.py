"""CG on an existing kernel store, side by side: over Dask (the store reread at every
product) and on Ray actors holding it (``DistributedKernel``: read once).

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_dsolve_store.py STORE [--iterations 4]

Unpreconditioned CG with ``tol=1e-12`` so that both run exactly ``--iterations``
iterations on 10 random one-hot right-hand sides; prints one JSON line: seconds, passes
over the kernel and bytes read from the store (counted by the distributed path; the Dask
path reads the whole store once per pass). The distributed time includes starting the
actors and their one read of the store.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import warnings

import numpy as np

import bigntk as nt
from bigntk.solve import fit
from bigntk.store import KernelStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    n = KernelStore.open(args.store).plan.n1
    y = np.eye(10, dtype=np.float32)[np.random.default_rng(1).integers(0, 10, n)]
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    out: dict = {"store": args.store, "n": n, "uptime_before": uptime}
    warnings.simplefilter("ignore")  # the capped CG warns ConvergenceWarning
    paths = {
        "dask": (nt.open_kernel(args.store), {}),
        "distributed": (args.store, {"distributed": True, "workers": args.workers}),
    }
    for name, (kernel, options) in paths.items():
        start = time.perf_counter()
        model = fit(kernel, y, method="cg", preconditioner=None, tol=1e-12,
                    maxiter=args.iterations, progress=False, checkpoint=False,
                    **options)  # fmt: skip
        info = model.info
        out[name] = {"seconds": time.perf_counter() - start, "passes": info.passes,
                     "iterations": info.iterations, "bytes_read": info.bytes_read}  # fmt: skip
        model.close()
    out["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
