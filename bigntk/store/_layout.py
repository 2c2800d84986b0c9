"""The store's layout: its format, its arrays, and the tiling of a kernel matrix into blocks.

Layout::

    <path>/                     group; attrs["bigntk"]: format, spec, spec_hash, versions, timings
    <path>/ntk, <path>/nngp     (n1, n2, *out) (diagonal builds: (n, *out)); chunk = one block;
                                fill NaN; dimension_names set (xarray.open_zarr works)
    <path>/manifest             uint8 (grid rows, grid cols): 1 = block committed
    <path>/checksum_<kind>      int64 (grid rows, grid cols): CRC-32 of each committed block
    <path>/solve/               solves and spectra of this kernel (bigntk solve): removed
                                with the store on overwrite

A block is a pair of block indices ``(bi, bj)``: rows ``bi*b : (bi+1)*b`` of
x1 against rows ``bj*b : (bj+1)*b`` of x2, cropped at the edges. Symmetric
builds (``x2=None``) compute only blocks with ``bi <= bj``; the mirror is
written as the transpose. Diagonal builds (the batch axis is a diagonal axis)
are row-blocked: blocks ``(bi, bi)`` only, each holding ``b`` numbers per
output entry.

The plan never materialises Python objects per block for the whole matrix:
pending blocks come from a boolean mask of committed ones, with NumPy, so a
10^6 x 10^6 kernel (~250k blocks of 2048) plans in milliseconds.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Plan:
    """The blocks of one build.

    Attributes:
        n1, n2: number of x1 and x2 examples.
        block: block size (rows and columns).
        symmetric: only blocks ``bi <= bj`` are computed (x2 is x1).
        diagonal: row-blocked diagonal build (``n1 == n2``, blocks ``(bi, bi)``).
    """

    n1: int
    n2: int
    block: int
    symmetric: bool = False
    diagonal: bool = False

    def __post_init__(self):
        if self.block < 1:
            raise ValueError(f"block size must be a positive int, got {self.block} instead.")
        if (self.symmetric or self.diagonal) and self.n1 != self.n2:
            raise ValueError(
                f"a symmetric or diagonal build needs n1 == n2, got {self.n1} and {self.n2}."
            )

    @property
    def grid(self) -> tuple[int, int]:
        """Number of block rows and block columns."""
        return math.ceil(self.n1 / self.block), math.ceil(self.n2 / self.block)

    def mask(self) -> np.ndarray:
        """Boolean ``grid`` array: True where a block is computed."""
        g1, g2 = self.grid
        if self.diagonal:
            return np.eye(g1, g2, dtype=bool)
        if self.symmetric:
            return np.triu(np.ones((g1, g2), dtype=bool))
        return np.ones((g1, g2), dtype=bool)

    @property
    def num_blocks(self) -> int:
        g1, g2 = self.grid
        if self.diagonal:
            return g1
        return g1 * (g1 + 1) // 2 if self.symmetric else g1 * g2

    def pending(self, committed: np.ndarray) -> np.ndarray:
        """``(k, 2)`` int array of the blocks still to compute, row-major order."""
        return np.argwhere(self.mask() & ~committed)

    def rows(self, bi: int) -> tuple[int, int]:
        """``[start, stop)`` of x1 rows in block row ``bi``."""
        return bi * self.block, min((bi + 1) * self.block, self.n1)

    def cols(self, bj: int) -> tuple[int, int]:
        """``[start, stop)`` of x2 rows in block column ``bj``."""
        return bj * self.block, min((bj + 1) * self.block, self.n2)


FORMAT_VERSION = 1
MANIFEST = "manifest"
MANIFEST_CHUNK = 512
SOLVE_FOLDER = "solve"  # bigntk.solve's checkpoints and results of this kernel (not Zarr)
LEASE_KEY = "manifest/bigntk.lease"  # beside the manifest chunks: Zarr never lists it
BEAT_PREFIX = LEASE_KEY + ".beat-"  # + the holder's token: its latest heartbeat


def mirror_permutation(dims: list[str]) -> tuple[int, ...]:
    """Axis permutation turning a block of K(x1, x2) into the block of K(x2, x1).

    Paired dims (``x1``/``x2``, ``out{k}_1``/``out{k}_2``) swap places.
    """
    perm = list(range(len(dims)))
    index = {d: i for i, d in enumerate(dims)}
    for i, d in enumerate(dims):
        partner = "x2" if d == "x1" else d[:-2] + "_2" if d.endswith("_1") else None
        if partner is not None:
            j = index[partner]
            perm[i], perm[j] = j, i
    return tuple(perm)
