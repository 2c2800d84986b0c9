"""One worker's share of a stored kernel: blocks read once into host memory, then products.

A :class:`BlockServer` runs inside a Ray actor (see :mod:`bigntk.solve._distributed`).
It reads its blocks from the store once, through the public store API and a
Zarr store wrapper that counts the bytes of every chunk it gets, keeps them in
the stored dtype, flattened to ``(rows * k, cols * k)`` matrices, and answers
products with many right-hand sides from memory.

For a symmetric store it is given only upper blocks ``(bi, bj)``, ``bi <= bj``;
an off-diagonal one serves both ``K_ij v_j`` and ``K_ji v_i = K_ijᵀ v_i``, so
the mirror blocks (format 1 stores them) are never read; a format-3 diagonal
block is read packed and unpacked in memory.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import zarr
from zarr.storage import WrapperStore

from bigntk.solve._operator import flatten_block, output_size
from bigntk.store import KernelStore


class CountingStore(WrapperStore):
    """A Zarr store that counts the bytes of the chunks it returns (not the metadata:
    ``zarr.json`` documents, a few kB whoever reads the store)."""

    def __init__(self, store):
        super().__init__(store)
        self.bytes_read = 0

    async def get(self, key, prototype, byte_range=None):
        buffer = await super().get(key, prototype, byte_range)
        if buffer is not None and not key.endswith("zarr.json"):
            self.bytes_read += len(buffer)
        return buffer

    async def get_partial_values(self, prototype, key_ranges):
        buffers = await super().get_partial_values(prototype, key_ranges)
        counted = [b for b, (key, _) in zip(buffers, key_ranges, strict=True)
                   if b is not None and not key.endswith("zarr.json")]  # fmt: skip
        self.bytes_read += sum(len(b) for b in counted)
        return buffers


@dataclasses.dataclass(frozen=True)
class Block:
    """One stored block in memory: examples ``[r0, r1) x [c0, c1)``; ``data`` is the
    flattened ``((r1 - r0) * k, (c1 - c0) * k)`` matrix; ``mirror``: it also serves
    the transposed block ``(bj, bi)``."""

    r0: int
    r1: int
    c0: int
    c1: int
    mirror: bool
    data: np.ndarray


@dataclasses.dataclass(frozen=True)
class LoadInfo:
    """What loading a shard cost: ``bytes_read`` from the store, ``bytes_held`` in memory."""

    blocks: int
    bytes_read: int
    bytes_held: int
    seconds: float
    pid: int


class BlockServer:
    """The blocks ``blocks`` (``(m, 2)`` block indices) of ``kind`` in the store at ``path``.

    Args:
        path: the kernel store.
        kind: ``'ntk'`` or ``'nngp'``.
        blocks: block indices ``(bi, bj)`` this server holds.
        symmetric: off-diagonal blocks also serve their mirrors.
    """

    def __init__(self, path: str, kind: str, blocks: np.ndarray, symmetric: bool):
        start = time.perf_counter()
        opened = KernelStore.open(path)
        counting = CountingStore(opened.array(kind).store)
        group = zarr.open_group(store=counting, path=opened.group.path, mode="r")
        store = KernelStore(group, opened.path)  # the same store, every read counted
        plan = store.plan
        self.k = output_size(store.array(kind).shape, kind)
        self.n = plan.n1
        self.blocks: list[Block] = []
        for bi, bj in np.asarray(blocks, dtype=int).reshape(-1, 2):
            (r0, r1), (c0, c1) = plan.rows(bi), plan.cols(bj)
            data = flatten_block(store.block(kind, bi, bj), self.k)
            self.blocks.append(Block(r0, r1, c0, c1, symmetric and bi != bj, data))
        held = sum(b.data.nbytes for b in self.blocks)
        self.load = LoadInfo(len(self.blocks), counting.bytes_read, held,
                             time.perf_counter() - start, os.getpid())  # fmt: skip
        self.product_seconds = 0.0  # inside matmat, for bandwidth figures

    def info(self) -> LoadInfo:
        return self.load

    def seconds_in_products(self) -> float:
        """Seconds spent computing products so far (not waiting for or sending vectors)."""
        return self.product_seconds

    def matmat(self, v: np.ndarray) -> np.ndarray:
        """This shard's part of ``K @ v`` for ``v`` ``(n*k, r)``: ``(n*k, r)`` float64."""
        start, k = time.perf_counter(), self.k
        out = np.zeros(v.shape, dtype=np.float64)
        for b in self.blocks:
            rows, cols = slice(b.r0 * k, b.r1 * k), slice(b.c0 * k, b.c1 * k)
            data = b.data.astype(np.float64, copy=False)  # one cast serves both products
            out[rows] += data @ v[cols]
            if b.mirror:
                out[cols] += data.T @ v[rows]
        self.product_seconds += time.perf_counter() - start
        return out

    def take(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """This shard's entries of ``K[rows][:, cols]`` (example indices), flattened to
        ``(len(rows) * k, len(cols) * k)`` float64, zero where another shard holds them."""
        k = self.k
        out = np.zeros((len(rows) * k, len(cols) * k))
        for b in self.blocks:
            _fill(out, b.data, rows, cols, (b.r0, b.r1), (b.c0, b.c1), k)
            if b.mirror:
                _fill(out, b.data.T, rows, cols, (b.c0, b.c1), (b.r0, b.r1), k)
        return out

    def diagonal_blocks(self) -> list[tuple[int, int, np.ndarray]]:
        """``(start, stop, block)`` for each diagonal block held, float64."""
        return [(b.r0, b.r1, np.asarray(b.data, dtype=np.float64))
                for b in self.blocks if b.r0 == b.c0 and not b.mirror]  # fmt: skip


def _fill(out, data, rows, cols, row_range, col_range, k):
    """Copy the entries of ``data`` (examples ``row_range x col_range``) that ``rows x cols``
    asks for into ``out``."""
    (r0, r1), (c0, c1) = row_range, col_range
    ri = np.flatnonzero((rows >= r0) & (rows < r1))
    ci = np.flatnonzero((cols >= c0) & (cols < c1))
    if not (len(ri) and len(ci)):
        return
    out_rows, src_rows = _flat(ri, k), _flat(rows[ri] - r0, k)
    out_cols, src_cols = _flat(ci, k), _flat(cols[ci] - c0, k)
    out[np.ix_(out_rows, out_cols)] = data[np.ix_(src_rows, src_cols)]


def _flat(index: np.ndarray, k: int) -> np.ndarray:
    """Example indices -> flattened indices ``i * k + a``."""
    return (index[:, None] * k + np.arange(k)).ravel()
