"""Proof at scale: one real large build, its read and a regression on it, measured side by side.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_large.py --n 65536 \\
        [--config configs/mnist_scale_fcn.yaml] [--out kernels/bench_large] [--keep]

Builds the config's kernel (default: the symmetric NTK of a 784-512-512-10 ReLU FCN on
synthetic MNIST-shaped inputs, STRUCTURED_DERIVATIVES, trace over 10 logits, float32,
``block_size`` from the builder's default rule) for ``--n`` examples in a fresh local
Ray, and reports:

* build wall time (Ray already running; workers' start included) and **unique** kernel
  entries per second: a symmetric ``n x n`` kernel counts ``n (n + 1) / 2`` entries
  (each pair once), a rectangular one ``n1 n2``;
* the in-process rate of the same block program: :class:`bigntk.build.BlockKernel`
  with the build's settings, timed on a few off-diagonal blocks in this (the driver's)
  process before and after the build; builder efficiency = build rate / in-process
  rate, both in computed entries per second (every block of the plan counts its
  ``rows x cols`` entries, as a worker computes them; mirrors are not computed);
* the workers' own timings (``BuildResult.worker_s``): the share of ``workers x wall``
  they spent reading rows, computing and writing blocks (what the builder's overhead
  leaves them, independent of the machine's speed), and one worker's rate of entries
  while computing, to set against the in-process rate;
* the driver's CPU time during the build (``time.process_time()``, all its threads,
  less the CPU time of this script's two monitoring threads) as a fraction of the
  build's wall time, and by thread (from ``/proc/self/task``, by thread name);
* peak resident memory of the driver and of the Ray worker processes (psutil,
  sampled every 0.5 s in a thread);
* bytes on disk (allocated blocks of every file of the store, as ``du``);
* a full read through :func:`bigntk.open_kernel` (``.sum().compute()``), in GB/s of
  the dense kernel's bytes and of the bytes on disk;
* a kernel regression (:func:`bigntk.solve.fit`, CG with a Nyström preconditioner)
  on synthetic one-hot targets: iterations, seconds, passes over the kernel (as
  ``SolveInfo.passes`` counts them) and the bytes they read (passes x bytes on disk).

Writes ``benchmarks/results-large-n<N>.json`` and prints a Markdown row for
``benchmarks/RESULTS.md``. The store is deleted at the end unless ``--keep``; a store an
earlier run kept at the same path is deleted first (it would answer as complete).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import warnings

import jax
import numpy as np
import psutil

import bigntk as nt
from bigntk.build import BlockKernel, plan_layout, resolve_vmap_axes
from bigntk.config import load_config
from bigntk.solve import fit

HERE = os.path.dirname(os.path.abspath(__file__))


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads, summed by name (Linux ``/proc``; else {}): a
    Python thread's own name, else the native one (Ray's and XLA's C++ threads)."""
    out: dict[str, float] = {}
    named = {str(t.native_id): t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = named.get(tid, name)
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def thread_cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds by thread name between two :func:`thread_cpu` snapshots, largest first."""
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    return {k: round(v, 3) for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0}


class PeakRSS:
    """Peak resident bytes of this process and of its Ray worker descendants (a thread)."""

    def __init__(self, every: float = 0.5):
        self.every, self.driver, self.worker, self.workers_total = every, 0, 0, 0
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-rss")

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.cpu_s = time.thread_time()  # this thread's own CPU: not the builder's
            try:
                self.driver = max(self.driver, me.memory_info().rss)
                total = 0
                for p in me.children(recursive=True):
                    try:
                        if "ray::" in " ".join(p.cmdline()[:1]) or p.name().startswith("ray::"):
                            rss = p.memory_info().rss
                            self.worker, total = max(self.worker, rss), total + rss
                    except psutil.Error:
                        continue
                self.workers_total = max(self.workers_total, total)
            except psutil.Error:  # pragma: no cover
                pass
            self._stop.wait(self.every)


def _zarr_threads_cpu() -> float:
    """CPU seconds so far of Zarr's IO thread and its pool (where a read's work runs)."""
    return sum(v for k, v in thread_cpu().items() if k == "zarr_io" or k.startswith("asyncio_"))


class Progress:
    """Committed blocks over time, saved every ``every`` s (a thread): a build stopped before
    its end still leaves its measured rate, driver CPU fraction and memory in the JSON.

    Its reads run on Zarr's IO threads, which the builder's commits share: the CPU those
    threads spend during each read (``cpu_s``, 10 ms ticks) is the benchmark's, not the
    driver's, and is subtracted with this thread's own.
    """

    def __init__(self, path: str, record: dict, rss: PeakRSS, n: int, every: float = 60.0):
        self.path, self.record, self.rss, self.n, self.every = path, record, rss, n, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-progress")
        self.start, self.cpu = time.perf_counter(), time.process_time()
        self.cpu_s = self.io_cpu_s = 0.0
        record["progress"] = []

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from bigntk.store import KernelStore

        while not self._stop.wait(self.every):
            io = _zarr_threads_cpu()
            try:
                store = KernelStore.open(self.path)
                done, total = int(store.committed().sum()), int(store.plan.mask().sum())
            except Exception:  # noqa: BLE001 - the store may not exist yet
                continue
            finally:
                self.io_cpu_s += _zarr_threads_cpu() - io
                self.cpu_s = time.thread_time() + self.io_cpu_s
            self.record["progress"].append({
                "elapsed_s": time.perf_counter() - self.start, "committed": done, "blocks": total,
                "driver_cpu_s": time.process_time() - self.cpu - self.cpu_s - self.rss.cpu_s,
                "driver_peak_rss_mib": self.rss.driver / 2**20,
                "worker_peak_rss_mib": self.rss.worker / 2**20, "uptime": uptime(),
            })  # fmt: skip
            save(self.record, self.n)
            self.cpu_s = time.thread_time() + self.io_cpu_s


def computed_entries(n1: int, n2: int, block: int, symmetric: bool) -> int:
    """Entries the workers compute: every block of the plan (symmetric: ``i <= j``), whole."""
    rows = [min(block, n1 - i) for i in range(0, n1, block)]
    cols = [min(block, n2 - j) for j in range(0, n2, block)]
    if not symmetric:
        return sum(rows) * sum(cols)
    return sum(r * c for i, r in enumerate(rows) for j, c in enumerate(cols) if i <= j)


def du_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def in_process_rate(kernel: BlockKernel, x: np.ndarray, blocks: int) -> dict:
    """Entries/s of off-diagonal blocks computed here (one compile call first, not timed)."""
    b = kernel.block
    pairs = [(i, i + 1) for i in range(blocks)]
    kernel(x[0:b], x[b : 2 * b])  # compile
    times = []
    for i, j in pairs:
        start = time.perf_counter()
        kernel(x[i * b : (i + 1) * b], x[j * b : (j + 1) * b])
        times.append(time.perf_counter() - start)
    return {"block_s": times, "entries_per_s": b * b / float(np.median(times))}


def targets(x: np.ndarray, classes: int = 10) -> np.ndarray:
    """One-hot labels of a fixed random linear classifier of ``x`` (synthetic, reproducible)."""
    w = np.random.default_rng(1).standard_normal((x.shape[1], classes)).astype(np.float32)
    return np.eye(classes, dtype=np.float32)[np.argmax(x @ w, axis=1)]


def save(record: dict, n: int) -> None:
    """Write what is measured so far (each phase saves: a long run keeps its figures)."""
    with open(os.path.join(HERE, f"results-large-n{n}.json"), "w") as fh:
        json.dump(record, fh, indent=1, default=_plain)


def _plain(value):
    """NumPy scalars as Python numbers (``json`` knows only the latter)."""
    return value.item() if hasattr(value, "item") else str(value)


def _format(path: str) -> int | None:
    """The store's on-disk format version, as its metadata records it."""
    from bigntk.store import KernelStore

    return KernelStore.open(path).meta.get("format")


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("bigntk", "jax", "jaxlib", "ray", "zarr", "dask", "numpy", "psutil"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:  # pragma: no cover
            out[name] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=65_536)
    parser.add_argument("--config", default=os.path.join(HERE, "..", "configs",
                                                         "mnist_scale_fcn.yaml"))  # fmt: skip
    parser.add_argument("--out", default="kernels/bench_large")
    parser.add_argument("--timed-blocks", type=int, default=3)
    parser.add_argument("--fit-maxiter", type=int, default=30)
    parser.add_argument("--fit-tol", type=float, default=1e-3)
    parser.add_argument("--keep", action="store_true", help="keep the store")
    parser.add_argument("--fit-path", choices=["distributed", "dask"], default="distributed",
                        help="the solve on Ray actors holding the store (read once), or over "
                        "Dask (the store reread at every product)")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
    path = os.path.abspath(os.path.join(args.out, f"n{args.n}.zarr"))
    if os.path.exists(path):  # a store kept by an earlier run would answer as complete
        nt.open_kernel(path)  # raises unless it is a bigntk store: nothing else is removed
        print(f"removing the store of an earlier run: {path}", flush=True)
        shutil.rmtree(path)
    config = load_config(
        args.config,
        [f"data.x1.shape=[{args.n},784]", f"output.path={path}", "output.overwrite=true"],
    )
    s1, s2 = config.load_data()
    f, params = config.load_model(s1.shape[1:])
    kw = config.build_kwargs()
    record: dict = {"n": args.n, "config": os.path.relpath(args.config), "command": " ".join(
        ["benchmarks/bench_large.py", *sys.argv[1:]])}  # fmt: skip
    record["machine"] = {
        "cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(), "python": platform.python_version(),
        "jax_devices": [str(d) for d in jax.devices()],
    }  # fmt: skip
    record["versions"] = versions()
    record["uptime_before"] = uptime()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    record["disk_free_before_gb"] = shutil.disk_usage(os.path.dirname(path) or ".").free / 1e9
    print(record["uptime_before"], flush=True)

    # the same block program in this process, before and after the build
    vmap_axes = resolve_vmap_axes(f, params, {}, s1, s2, kw["vmap_axes"])
    block = plan_layout(f, params, {}, s1, s2, kw["kinds"], kw["trace_axes"],
                        kw["diagonal_axes"], kw["block_size"], 1, vmap_axes=vmap_axes,
                        implementation=kw["implementation"])["block"]  # fmt: skip
    kernel = BlockKernel(f, params, kw["kinds"], kw["trace_axes"], kw["diagonal_axes"],
                         vmap_axes, kw["implementation"], block,
                         devices=jax.local_devices()[:1])  # fmt: skip
    x = s1.read(0, min(s1.shape[0], (args.timed_blocks + 1) * block))
    timed = min(args.timed_blocks, len(x) // block - 1)
    before = in_process_rate(kernel, x, timed) if timed >= 1 else None
    print("in-process before:", before, flush=True)

    import ray

    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    try:
        drv_cpu, start, threads = time.process_time(), time.perf_counter(), thread_cpu()
        with PeakRSS() as rss, Progress(path, record, rss, args.n) as progress:
            result = nt.build_kernel(f, params, s1, s2, progress=False, **kw)
        wall = time.perf_counter() - start
        threads = thread_cpu_delta(threads, thread_cpu())
        monitors = rss.cpu_s + progress.cpu_s  # the benchmark's own threads, not the driver's
        drv_cpu = time.process_time() - drv_cpu - monitors
    finally:
        ray.shutdown()
    store = nt.open_kernel(path, "ntk")
    n1, n2 = store.shape[:2]
    symmetric = s2 is None
    unique = n1 * (n1 + 1) // 2 if symmetric else n1 * n2
    print(result.summary(), flush=True)
    record["build"] = {
        "block": block, "blocks": result.total, "tasks": result.tasks, "wall_s": wall,
        "builder_wall_s": result.wall_s, "workers_start_s": result.workers_start_s,
        "computed_entries": computed_entries(n1, n2, block, symmetric),
        "result_entries": result.entries, "unique_entries": unique,
        "unique_entries_per_s": unique / wall,
        "driver_cpu_s": drv_cpu, "driver_cpu_fraction": drv_cpu / wall, "monitor_cpu_s": monitors,
        "monitor_zarr_io_cpu_s": progress.io_cpu_s,  # the progress reads' Zarr IO, in monitors
        "driver_peak_rss_mib": rss.driver / 2**20, "worker_peak_rss_mib": rss.worker / 2**20,
        "workers_total_peak_rss_mib": rss.workers_total / 2**20,
        "driver_cpu_per_block_ms": 1e3 * drv_cpu / max(1, result.computed),
        "driver_threads_cpu_s": threads,  # by thread name, 10 ms ticks, threads alive at the end
        # the workers' own clocks (drift-free): their busy share of workers x wall, and
        # each worker's compute rate while computing (vs the in-process rate below)
        "workers": result.workers, "worker_s": result.worker_s,
        "worker_busy": result.worker_busy,
        "worker_compute_entries_per_s": computed_entries(n1, n2, block, symmetric)
        / max(result.worker_s.get("compute", 0.0), 1e-9),
    }  # fmt: skip

    save(record, args.n)
    assert block == store.chunks[0][0], (block, store.chunks[0][0])
    after = in_process_rate(kernel, x, timed) if timed >= 1 else None
    del kernel
    if before and after:
        times = before["block_s"] + after["block_s"]
        rate = block * block / float(np.median(times))
        record["in_process"] = {"before": before, "after": after, "entries_per_s": rate}
        build_rate = computed_entries(n1, n2, block, symmetric) / wall  # as a worker counts
        record["build"]["efficiency"] = build_rate / rate
    else:
        record["in_process"] = None

    dense = n1 * n2 * store.dtype.itemsize
    disk = du_bytes(path)
    record["store"] = {"bytes_on_disk": disk, "dense_bytes": dense, "disk_over_dense": disk / dense,
                       "format": _format(path)}  # fmt: skip
    start = time.perf_counter()
    total = float(store.sum().compute())
    read_s = time.perf_counter() - start
    record["read"] = {"seconds": read_s, "sum": total, "dense_gb_per_s": dense / read_s / 1e9,
                      "disk_gb_per_s": disk / read_s / 1e9}  # fmt: skip

    save(record, args.n)
    y = targets(x=s1.read(0, n1))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a capped CG warns ConvergenceWarning; recorded below
        kernel = path if args.fit_path == "distributed" else store
        model = fit(kernel, y, method="cg", preconditioner="nystrom", rank=256,
                    tol=args.fit_tol, maxiter=args.fit_maxiter, progress=False,
                    distributed=args.fit_path == "distributed", checkpoint=False)  # fmt: skip
    fit_s = time.perf_counter() - start
    info = model.info
    record["fit"] = {
        "seconds": fit_s, "iterations": info.iterations, "converged": info.converged,
        "residual": info.residual, "passes": info.passes, "path": args.fit_path,
        "bytes_read": info.bytes_read if info.bytes_read is not None else info.passes * disk,
        "product_gb_per_s": info.passes * disk / fit_s / 1e9, "tol": args.fit_tol,
        "maxiter": args.fit_maxiter,
        "train_accuracy": float(np.mean(np.argmax(model.predict(store).mean, 1)
                                        == np.argmax(y, 1))) if n1 <= 16_384 else None,
    }  # fmt: skip
    record["uptime_after"] = uptime()
    save(record, args.n)
    print(json.dumps(record, indent=1, default=_plain))
    b, r, rd, ft = record["build"], record["in_process"] or {}, record["read"], record["fit"]
    print(
        f"| {args.n:,} | {block} | {b['blocks']} | {b['wall_s']:.0f} | "
        f"{b['unique_entries_per_s'] / 1e6:.2f} M | "
        f"{r.get('entries_per_s', float('nan')) / 1e6:.2f} M | "
        f"{b.get('efficiency', float('nan')):.2f} | {100 * b['driver_cpu_fraction']:.2f}% | "
        f"{b['driver_peak_rss_mib']:.0f} / {b['worker_peak_rss_mib']:.0f} | "
        f"{disk / 1e9:.2f} GB ({disk / dense:.2f}x) | {rd['dense_gb_per_s']:.2f} | "
        f"{ft['iterations']} it, {ft['seconds']:.0f} s, {ft['passes']} passes, "
        f"{ft['bytes_read'] / 1e9:.0f} GB |"
    )
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
