"""Zarr 3 codecs on real kernels, and the format-2 reader: ratio, write and read GB/s.

    .venv/bin/python benchmarks/bench_codecs.py [--quick]

1. Builds a few kernels with :func:`bigntk.build_kernel` (float32, a few thousand
   rows) and reads each back in memory.
2. For each codec option, writes the kernel to a fresh Zarr array chunked as the
   build's blocks (one chunk per block, CRC32C last, as format 2 does) and reads it
   back: compression ratio (chunk bytes on disk / those of no codec: edge chunks are
   stored whole, padded, by every option), write and read GB/s
   of kernel bytes (best of ``--repeat``; files in the page cache, so reads measure
   decoding, not the disk).
3. Compares the extra write time per kernel entry with the build's own time per
   entry, and states the default rule's verdict.
4. The format-2 reader: ``open_kernel`` (a graph over ``da.from_zarr``'s chunks,
   each lower chunk a transpose task of its stored mirror's chunk) against
   ``SymmetricArray`` under ``da.from_array`` (each lower block read again from
   its mirror), a ``da.block`` graph of per-block transposes, and ``da.from_zarr``
   of the same store with its lower blocks on disk; and the time to build each
   graph for larger grids (no I/O).

Prints Markdown tables (paste them into benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import shutil
import tempfile
import time

import dask
import dask.array as da
import jax
import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

import bigntk as nt
from bigntk import stax
from bigntk.config import load_builtin
from bigntk.store import KernelStore, Plan, SymmetricArray, mirror_lower_blocks, open_kernel
from bigntk.store._symmetric import symmetric_dask

CODECS = {
    "none (format 1)": [],
    "crc32c (format 2)": [Crc32cCodec()],
    "zstd 1": [ZstdCodec(level=1), Crc32cCodec()],
    "zstd 3": [ZstdCodec(level=3), Crc32cCodec()],
    "blosc zstd 1 shuffle": [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"), Crc32cCodec()],
    "blosc zstd 3 shuffle": [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), Crc32cCodec()],
    "blosc zstd 1 bitshuffle": [
        BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),
        Crc32cCodec(),
    ],
    "blosc lz4 shuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()],
    "blosc lz4 bitshuffle": [
        BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
        Crc32cCodec(),
    ],
}
RATIO_MAX = 0.8  # compression must save at least 20% of the bytes ...
BUILD_SLOWDOWN_MAX = 0.05  # ... cost at most 5% of a build's time per entry ...
READ_SLOWDOWN_MAX = 0.2  # ... and read at least 80% as fast as uncompressed


def fcn(features: int, width: int = 512):
    init_fn, apply_fn, _ = stax.serial(
        stax.Flatten(), stax.Dense(width, b_std=0.1), stax.Relu(),
        stax.Dense(width, b_std=0.1), stax.Relu(), stax.Dense(1, b_std=0.1),
    )  # fmt: skip
    _, params = init_fn(jax.random.PRNGKey(0), (-1, features))
    return apply_fn, params


def cnn():
    init_fn, apply_fn, _ = stax.serial(
        stax.Conv(16, (3, 3), padding="SAME"), stax.Relu(),
        stax.Conv(16, (3, 3), padding="SAME"), stax.Relu(), stax.Flatten(), stax.Dense(10),
    )  # fmt: skip
    _, params = init_fn(jax.random.PRNGKey(1), (-1, 8, 8, 1))
    return apply_fn, params


def kernels(quick: bool, largest_only: bool = False) -> list[tuple[str, str, int, float]]:
    """Build the kernels; ``[(name, store path, block, build seconds per entry)]``."""
    n = 600 if quick else None
    digits, _ = load_builtin("digits", n=n)
    synthetic, _ = load_builtin("synthetic", shape=(600 if quick else 3000, 64), seed=0)
    cases = [
        ("ReLU FCN NTK, digits", fcn(64), digits, "ntk"),
        ("ReLU FCN NTK, synthetic", fcn(64), synthetic, "ntk"),
        ("CNN NNGP, digits", cnn(), digits, "nngp"),
    ]
    out = []
    for name, (f, params), x, kind in cases[1:2] if largest_only else cases:
        path = tempfile.mkdtemp(suffix=".zarr")
        grid = math.ceil(len(x) / (256 if quick else 512))
        block = math.ceil(len(x) / grid)  # near 512, the edge blocks barely padded
        r = nt.build_kernel(f, params, x, path=path, kinds=(kind,), block_size=block,
                            progress=False, overwrite=True)  # fmt: skip
        per_entry = (r.wall_s - r.workers_start_s) / (len(x) * len(x))  # symmetric: ~half computed
        out.append((f"{name} ({len(x)} rows, {kind})", path, block, per_entry))
    return out


def _timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _disk_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs
    )  # fmt: skip


def codec_row(kernel: np.ndarray, block: int, codecs: list, repeat: int) -> tuple:
    """``(chunk bytes on disk, write GB/s, read GB/s, write seconds)`` of one codec option."""
    root = tempfile.mkdtemp(suffix=".zarr")
    try:

        def write():
            shutil.rmtree(root, ignore_errors=True)
            arr = zarr.create_array(
                root, shape=kernel.shape, chunks=(block, block), dtype=kernel.dtype,
                fill_value=np.nan, compressors=codecs,
            )  # fmt: skip
            arr[...] = kernel

        w = _timed(write, repeat)
        arr = zarr.open_array(root, mode="r")
        r = _timed(lambda: arr[...], repeat)
        assert np.array_equal(arr[...], kernel)  # lossless
        ratio = _disk_bytes(os.path.join(root, "c"))  # made relative to 'none' by the caller
        return ratio, kernel.nbytes / w / 1e9, kernel.nbytes / r / 1e9, w
    finally:
        shutil.rmtree(root, ignore_errors=True)


def block_graph(arr: zarr.Array, plan: Plan, perm: tuple[int, ...]) -> da.Array:
    """The ``da.block`` alternative: per-block slices of the stored array and their transposes."""
    a = da.from_zarr(arr)
    g = plan.grid[0]
    rows = [[a.blocks[i, j] if i <= j else a.blocks[j, i].transpose(perm) for j in range(g)]
            for i in range(g)]  # fmt: skip
    return da.block(rows)


def readers(path: str, repeat: int) -> list[tuple[str, float, int]]:
    """``[(reader, GB/s, tasks)]`` for one format-2 store, all readers on the same values."""
    store = KernelStore.open(path)
    kind = store.kinds[0]
    want = open_kernel(path, kind).compute()
    mirrored = tempfile.mkdtemp(suffix=".zarr")
    shutil.rmtree(mirrored)
    shutil.copytree(path, mirrored)
    mirror_lower_blocks(mirrored)
    values = store.values(kind)
    options = {
        "open_kernel (from_zarr chunks + transpose tasks)": open_kernel(path, kind),
        "SymmetricArray under da.from_array": da.from_array(
            values, chunks=values.chunks, asarray=False
        ),
        "da.block of from_zarr blocks and transposes": block_graph(
            store.array(kind), store.plan, (1, 0)
        ),
        "da.from_zarr, lower blocks on disk (mirror_lower_blocks)": da.from_zarr(
            KernelStore.open(mirrored).array(kind)
        ),
    }
    out = []
    for name, array in options.items():
        assert np.array_equal(array.compute(), want)
        seconds = _timed(array.compute, repeat)
        out.append((name, want.nbytes / seconds / 1e9, len(array.__dask_graph__())))
    shutil.rmtree(mirrored, ignore_errors=True)
    return out


def graph_times(grids: list[int], block: int = 64) -> list[tuple[int, float, float, float]]:
    """``[(grid, open_kernel's s, from_array s, da.block s)]``: building each graph."""
    out = []
    for g in grids:
        root = tempfile.mkdtemp(suffix=".zarr")
        arr = zarr.create_array(root, shape=(g * block, g * block), chunks=(block, block),
                                dtype="float32", fill_value=np.nan)  # fmt: skip
        plan = Plan(g * block, g * block, block, symmetric=True)
        t = time.perf_counter()
        symmetric_dask(arr, plan, (1, 0))
        t_graph = time.perf_counter() - t
        t = time.perf_counter()
        da.from_array(SymmetricArray(arr, plan, (1, 0)), chunks=(block, block), asarray=False)
        t_from_array = time.perf_counter() - t
        t = time.perf_counter()
        if g <= 128:  # ~quadratic: minutes beyond
            block_graph(arr, plan, (1, 0))
        out.append((g, t_graph, t_from_array, time.perf_counter() - t))
        shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small kernels, for a smoke test")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--readers-only", action="store_true", help="skip the codec tables")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    dask.config.set(scheduler="threads")
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs; load {os.getloadavg()}")
    print(f"zarr {zarr.__version__}, dask {dask.__version__}, numpy {np.__version__}, "
          f"jax {jax.__version__}, bigntk {nt.__version__}")  # fmt: skip
    built = kernels(args.quick, args.readers_only)
    verdicts = {name: True for name in CODECS if "zstd" in name or "lz4" in name}
    for name, path, block, per_entry in [] if args.readers_only else built:
        store = KernelStore.open(path)
        kernel = open_kernel(path, store.kinds[0]).compute()
        print(f"\n### {name}: {kernel.shape} {kernel.dtype}, {kernel.nbytes / 1e6:.1f} MB, "
              f"blocks of {block}; build {per_entry * 1e9:.1f} ns per entry\n")  # fmt: skip
        print("| codec | ratio | write GB/s | read GB/s | extra write / build time |")
        print("|---|---|---|---|---|")
        base = None
        for codec, codecs in CODECS.items():
            size, wgb, rgb, w = codec_row(kernel, block, codecs, args.repeat)
            base = base or (w, rgb, size)
            ratio = size / base[2]
            extra = max(0.0, w - base[0]) / kernel.size / per_entry
            ok = ratio <= RATIO_MAX and extra <= BUILD_SLOWDOWN_MAX
            ok = ok and rgb >= (1 - READ_SLOWDOWN_MAX) * base[1]
            if codec in verdicts:
                verdicts[codec] &= ok
            print(f"| {codec} | {ratio:.3f} | {wgb:.2f} | {rgb:.2f} | {100 * extra:.2f}% |")
    print(f"\nbuilt: {[b[0] for b in built]}")
    print("" if args.readers_only else "\nA compressor qualifies as the default (ratio <= "
          f"{RATIO_MAX}, extra write <= {BUILD_SLOWDOWN_MAX:.0%} of the build, read >= "
          f"{1 - READ_SLOWDOWN_MAX:.0%} of uncompressed) on every kernel: "
          f"{[c for c, ok in verdicts.items() if ok] or 'none'}")  # fmt: skip
    print("\n### Format-2 readers (the largest kernel)\n")
    print("| reader | read GB/s | tasks |")
    print("|---|---|---|")
    largest = max(built, key=lambda b: KernelStore.open(b[1]).plan.n1)[1]
    for reader, gbs, tasks in readers(largest, args.repeat):
        print(f"| {reader} | {gbs:.2f} | {tasks} |")
    print("\n| grid | open_kernel graph s | from_array graph s | da.block graph s |")
    print("|---|---|---|---|")
    for g, o, a, b in graph_times([16, 64] if args.quick else [16, 64, 128, 489]):
        b = f"{b:.3f}" if g <= 128 else "not run"
        print(f"| {g} x {g} | {o:.3f} | {a:.3f} | {b} |")
    for _, path, _, _ in built:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
