"""Distributed solves (Ray actors, the store read once) against the Dask path, side by side.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_dsolve.py [--n 4096] [--block 512]

Builds (or reuses) an NTK of a small MLP with ``bigntk.build_kernel`` (traced,
symmetric; a new store is format 3: the upper blocks, and the diagonal ones packed),
then measures in one run:

* bytes read from the store per solve: both paths read through a Zarr store
  wrapper that counts the bytes of every chunk returned (the Dask kernel is
  ``open_kernel``'s graph over the counted arrays, each stored chunk read once per
  pass; the actors count their own reads);
* seconds per CG iteration (the same unpreconditioned solve, a fixed number of
  iterations) on both paths;
* iterations and seconds to a relative residual of 1e-6 with no preconditioner,
  block-Jacobi and Nyström, on the distributed path;
* the top-k eigenvalues by ``eigh_topk`` (distributed) against
  ``scipy.sparse.linalg.eigsh`` on the dense matrix.

Writes ``benchmarks/results-dsolve.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import dask
import dask.array as da
import jax
import numpy as np
import ray
import scipy
import scipy.sparse.linalg
import zarr
from zarr.storage import WrapperStore

import bigntk as nt
from bigntk import stax
from bigntk.errors import ConvergenceWarning
from bigntk.store import KernelStore, mirror_permutation


class Counting(WrapperStore):
    """Counts the bytes the Zarr store returns."""

    def __init__(self, store):
        super().__init__(store)
        self.bytes_read = 0

    async def get(self, key, prototype, byte_range=None):
        buffer = await super().get(key, prototype, byte_range)
        self.bytes_read += 0 if buffer is None else len(buffer)
        return buffer


def build(path: str, n: int, block: int) -> float:
    init_fn, apply_fn, _ = stax.serial(stax.Dense(256), stax.Relu(), stax.Dense(256),
                                       stax.Relu(), stax.Dense(10))  # fmt: skip
    _, params = init_fn(jax.random.PRNGKey(0), (-1, 32))
    x = np.random.default_rng(0).standard_normal((n, 32)).astype(np.float32)
    start = time.perf_counter()
    nt.build_kernel(apply_fn, params, x, None, path=path, kinds=("ntk",), block_size=block,
                    progress=False)  # fmt: skip
    return time.perf_counter() - start


def stored_bytes(path: str) -> tuple[int, int]:
    """Bytes of all chunk files of ``ntk``, and of the upper blocks (bi <= bj) only (format 3:
    the packed diagonal blocks' chunks count in both)."""
    packed = Path(path) / "diagonal_ntk" / "c"
    total = upper = sum(f.stat().st_size for f in packed.rglob("*") if f.is_file())
    root = Path(path) / "ntk" / "c"
    for file in root.rglob("*"):
        if file.is_file():
            bi, bj = (int(p) for p in file.relative_to(root).parts[:2])
            total += file.stat().st_size
            upper += file.stat().st_size if bi <= bj else 0
    return total, upper


def dask_kernel(path: str) -> tuple[da.Array, Counting]:
    """What ``open_kernel(path)`` returns, its reads counted (lower blocks served from the
    stored upper ones, and format 3's diagonal blocks unpacked, as ``open_kernel`` does)."""
    from bigntk.store._symmetric import symmetric_dask  # open_kernel's graph, on this store

    opened = KernelStore.open(path)
    counting = Counting(opened.array("ntk").store)
    group = zarr.open_group(store=counting, path=opened.group.path, mode="r")
    store = KernelStore(group, opened.path)
    if store.plan.symmetric and not store.mirrored:
        array = symmetric_dask(store.array("ntk"), store.plan, mirror_permutation(store.dims),
                               store.packed_array("ntk"))  # fmt: skip
        return array, counting
    return da.from_zarr(store.array("ntk")), counting


def per_iteration(kernel, y, iterations: int) -> dict:
    """A fixed number of unpreconditioned CG iterations: seconds per iteration."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = nt.solve.fit(kernel, y, method="cg", preconditioner=None, tol=1e-30,
                              maxiter=iterations, progress=False, checkpoint=False)  # fmt: skip
    info = fitted.info
    return {"iterations": info.iterations, "passes": info.passes, "fit_s": info.seconds,
            "s_per_iteration": info.seconds / info.passes}  # fmt: skip


def _traffic(op, i: int) -> int:
    """Bytes actor ``i`` streams per product: each block once, plus once more if mirrored."""
    shard = op.shards[i]
    mirrored = int((shard[:, 0] != shard[:, 1]).sum())
    per_block = op.current[i].bytes_held / len(shard)  # equal blocks (n a multiple of block)
    return int(per_block * (len(shard) + mirrored))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--path", default=None)
    args = parser.parse_args()
    path = args.path or f"/tmp/bigntk-bench-dsolve-{args.n}-{args.block}.zarr"
    out: dict = {"n": args.n, "block": args.block, "workers": args.workers,
                 "load_before": os.getloadavg()}  # fmt: skip
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    try:
        out["build_s"] = build(path, args.n, args.block)
        stored, upper = stored_bytes(path)
        out.update(stored_bytes=stored, upper_bytes=upper)
        y = np.random.default_rng(1).standard_normal((args.n, 4))

        kernel, counting = dask_kernel(path)
        with dask.config.set(scheduler="threads", num_workers=args.workers):
            out["dask"] = per_iteration(kernel, y, args.iterations)
        out["dask"]["bytes_read"] = counting.bytes_read
        out["dask"]["bytes_read_per_pass"] = counting.bytes_read / out["dask"]["passes"]

        start = time.perf_counter()
        op = nt.solve.DistributedKernel(path, "ntk", workers=args.workers)
        out["load_s"] = time.perf_counter() - start
        out["distributed"] = per_iteration(op, y, args.iterations)
        out["distributed"]["bytes_read"] = op.bytes_read
        compute = op.seconds_in_products()  # per actor, all 11 passes
        out["distributed"]["actor_compute_s_per_pass"] = [s / op.passes for s in compute]
        out["distributed"]["bytes_held_per_actor"] = [x.bytes_held for x in op.current]
        # a product streams each held block once, and an off-diagonal one twice (B v, Bᵀ v)
        traffic = [_traffic(op, i) for i in range(len(op.actors))]
        rates = [t * op.passes / s / 1e9 for t, s in zip(traffic, compute, strict=True)]
        out["distributed"]["actor_gb_per_s"] = rates

        out["to_1e-6"] = {}
        for precond in ("nystrom", "jacobi", None):
            fitted = nt.solve.fit(op, y, preconditioner=precond, rank=256, tol=1e-6,
                                  maxiter=2000, progress=False, checkpoint=False)  # fmt: skip
            out["to_1e-6"][str(precond)] = {"iterations": fitted.info.iterations,
                                            "seconds": fitted.info.seconds,
                                            "residual": fitted.info.residual}  # fmt: skip
        out["bytes_read_all_solves"] = op.bytes_read
        got = nt.solve.eigh_topk(op, args.topk, tol=1e-8)
        op.close()
        dense = nt.open_kernel(path).compute().astype(np.float64)
        start = time.perf_counter()
        want = np.sort(scipy.sparse.linalg.eigsh(dense, k=args.topk, which="LA")[0])[::-1]
        out["eigs"] = {
            "eigh_topk_s": got.seconds, "eigh_topk_products": got.iterations,
            "eigsh_s": time.perf_counter() - start,
            "max_rel_error": float(np.max(np.abs(got.eigenvalues - want) / want)),
            "eigenvalues": want.tolist(),
        }  # fmt: skip
    finally:
        ray.shutdown()
    out["load_after"] = os.getloadavg()
    out["versions"] = {"python": platform.python_version(), "numpy": np.__version__,
                       "scipy": scipy.__version__, "dask": dask.__version__,
                       "zarr": zarr.__version__, "ray": ray.__version__}  # fmt: skip
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs"
    Path(__file__).with_name("results-dsolve.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
