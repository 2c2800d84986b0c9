"""The store's layout: its format, its arrays, and the tiling of a kernel matrix into blocks.

Layout::

    <path>/                     group; attrs["bigntk"]: format, spec, spec_hash, versions, timings
    <path>/ntk, <path>/nngp     (n1, n2, *out) (diagonal builds: (n, *out)); chunk = one block;
                                fill NaN; dimension_names set (xarray.open_zarr works)
    <path>/manifest             uint8 (grid rows, grid cols): 1 = block committed
    <path>/checksum_<kind>      int64 (grid rows, grid cols): CRC-32 of each committed block
    <path>/diagonal_<kind>      format 3 symmetric builds: (grid, b (b + 1) / 2, *out), the
                                diagonal blocks packed (``_packed``), one chunk per block
    <path>/solve/               solves and spectra of this kernel (bigntk solve): removed
                                with the store on overwrite

A block is a pair of block indices ``(bi, bj)``: rows ``bi*b : (bi+1)*b`` of
x1 against rows ``bj*b : (bj+1)*b`` of x2, cropped at the edges. Symmetric
builds (``x2=None``) compute only blocks with ``bi <= bj``. Diagonal builds
(the batch axis is a diagonal axis) are row-blocked: blocks ``(bi, bi)`` only,
each holding ``b`` numbers per output entry.

Formats (``attrs["bigntk"]["format"]``):

- **3** (new stores): format 2, and a symmetric build stores each diagonal block
  packed, its pairs of rows ``a <= b`` only (``_packed``), in ``diagonal_<kind>``;
  the kernel array's diagonal chunks stay absent too. A symmetric kernel of
  ``n`` rows then takes ``n (n + 1) / 2`` entries on disk per output entry: the
  information it holds, half the dense matrix and ``n / 2`` more.
- **2**: a symmetric build stores each block once, ``bi <= bj``;
  the chunks of the lower blocks stay absent (a raw Zarr or ``xarray.open_zarr``
  reader sees NaN there). ``open_kernel`` serves a lower block as the transpose
  (:func:`mirror_permutation`) of the stored upper one, so readers see an exactly
  symmetric matrix; :func:`~bigntk.store.mirror_lower_blocks` writes them out
  for readers that need every chunk on disk. Each kernel chunk ends with a
  CRC32C (Zarr's ``crc32c`` codec), so any Zarr/Dask read of a damaged chunk fails.
- **1**: a symmetric build also writes every off-diagonal block's mirror (the
  transpose) as its own chunk; no codec. Still read, resumed (mirrors included)
  and verified.

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


FORMAT_VERSION = 3  # what new stores are written in
READABLE_FORMATS = (1, 2, 3)
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


def mirrors_on_disk(format_version: int, plan: Plan) -> bool:
    """Whether a store of this format and plan holds the mirror of each off-diagonal block.

    Only format 1 symmetric builds do; format 2 serves the mirrors from the upper blocks.
    """
    return format_version == 1 and plan.symmetric and not plan.diagonal


def serves_mirrors(format_version: int, plan: Plan) -> bool:
    """Whether a reader must build the lower blocks from the upper ones (formats 2-3, symmetric)."""
    return format_version >= 2 and plan.symmetric and not plan.diagonal


def packs_diagonal(format_version: int, plan: Plan) -> bool:
    """Whether the diagonal blocks are stored packed, in ``diagonal_<kind>`` (format 3)."""
    return format_version >= 3 and plan.symmetric and not plan.diagonal


def stored_entries(format_version: int, plan: Plan) -> int:
    """Kernel entries (per output entry) in the chunks of a complete store of this format.

    Zarr stores an edge chunk whole, so every chunk counts ``b^2`` entries (diagonal
    builds: ``b``). Format 3 symmetric: the upper off-diagonal chunks and one packed
    chunk per diagonal block, ``b (b + 1) / 2``; format 2: the upper chunks; otherwise
    every chunk of the grid.
    """
    (g1, g2), b = plan.grid, plan.block
    if plan.diagonal:
        return g1 * b
    if not serves_mirrors(format_version, plan):
        return g1 * g2 * b * b
    if packs_diagonal(format_version, plan):
        return g1 * (g1 - 1) // 2 * b * b + g1 * (b * (b + 1) // 2)
    return g1 * (g1 + 1) // 2 * b * b
