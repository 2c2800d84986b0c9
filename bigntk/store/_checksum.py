"""Per-block checksums: recorded at commit, checked by rereading, repaired by recomputing.

Each worker returns, with a written block, the CRC-32 of the bytes it wrote
for each kind: the block's values in the stored dtype, little-endian, C order,
followed by its mirror's for an off-diagonal block of a format-1 symmetric build
(format 2 stores no mirror); a format-3 diagonal block's packed pairs. The
driver records them next to the manifest, in arrays ``checksum_<kind>``
(int64, the manifest's grid and chunks; ``-1``: none recorded), written
before the manifest marks the block committed.

Stores made before checksums existed (same format version) have no such
arrays: they are created on the next resume, and their old blocks are still
checked for missing chunks and NaN/inf, just not against a checksum.

:func:`scan` rereads committed blocks and reports those whose chunk files are
missing or unreadable, whose values differ from the recorded checksum, or that
hold NaN/inf (and, asked, symmetric builds' blocks that are not exactly their
mirror's transpose: format 1's off-diagonal blocks, every format's diagonal
blocks); :func:`uncommit` removes them from the manifest (and deletes their
chunk files) so that a resumed build recomputes exactly those.

Format 2 and 3 stores also end every kernel chunk with a CRC32C (Zarr's ``crc32c``
codec): a damaged chunk fails any read, here reported ``'unreadable'``. The
per-block checksums stay: they tie what is on disk to what the worker computed
(a chunk rewritten whole, with a valid CRC32C, by anything but the build still
``'differs'``), and they cover format 1 stores, which have no codec.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from bigntk.store._packed import packed_length

logger = logging.getLogger(__name__)

PREFIX = "checksum_"
NONE = -1


def checksum(*parts: np.ndarray, dtype: Any = None) -> int:
    """CRC-32 of the arrays' values (cast to ``dtype``), little-endian, C order, in sequence."""
    crc = 0
    for part in parts:
        a = np.asarray(part, dtype=dtype)
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        crc = zlib.crc32(memoryview(a).cast("B"), crc)
    return crc


class ChecksumTable:
    """The driver's copy of the recorded checksums, one int64 grid per kind.

    Args:
        group: the store's Zarr group.
        kinds: the kinds built.
        grid: the block grid ``(rows, cols)``.
        chunks: chunks of the arrays (the manifest's).
    """

    def __init__(self, group: Any, kinds: Iterable[str], grid: tuple[int, int], chunks: Any):
        self.group, self.kinds, self.grid = group, tuple(kinds), tuple(grid)
        self.chunks = tuple(chunks)
        self._grids: dict[str, np.ndarray] | None = None
        self._arrays: dict[str, Any] = {}  # opened once: a commit writes, never reopens

    @staticmethod
    def create(group: Any, kinds: Iterable[str], grid: tuple[int, int], chunks: Any) -> None:
        """Create the (empty) checksum arrays of a store."""
        for kind in kinds:
            group.create_array(
                PREFIX + kind,
                shape=tuple(grid),
                chunks=tuple(chunks),
                dtype="int64",
                fill_value=NONE,
                dimension_names=["block_row", "block_col"],
            )

    def grids(self) -> dict[str, np.ndarray]:
        """``{kind: (rows, cols) int64}``; ``-1`` where no checksum is recorded."""
        if self._grids is None:
            self._grids = {}
            for kind in self.kinds:
                arr = self._array(kind)
                full = np.full(self.grid, NONE, np.int64)
                self._grids[kind] = full if arr is None else arr[...]
        return self._grids

    def _array(self, kind: str) -> Any:
        if kind in self._arrays:
            return self._arrays[kind]
        try:  # not group.array_keys(): listing warns about any stray object in the store
            self._arrays[kind] = self.group[PREFIX + kind]
        except KeyError:
            return None
        return self._arrays[kind]

    def record(self, block: tuple[int, int], sums: dict[str, int] | None) -> None:
        """Remember the checksums a worker returned for ``block`` (flushed at commit)."""
        grids = self.grids()
        for kind in self.kinds:
            value = NONE if not sums or kind not in sums else int(sums[kind])
            grids[kind][tuple(block)] = value

    def forget(self, blocks: np.ndarray) -> None:
        """Drop the checksums of ``blocks`` (they are about to be recomputed)."""
        for grid in self.grids().values():
            grid[tuple(np.asarray(blocks).reshape(-1, 2).T)] = NONE

    def flush(self, blocks: np.ndarray) -> None:
        """Write the array chunks holding ``blocks`` (``(k, 2)``), creating old stores' arrays."""
        blocks = np.asarray(blocks).reshape(-1, 2)
        if not len(blocks) or self._grids is None:
            return
        missing = [k for k in self.kinds if self._array(k) is None]
        if missing:
            self.create(self.group, missing, self.grid, self.chunks)
        c = np.asarray(self.chunks)
        for ci, cj in {tuple(b) for b in (blocks // c)}:
            r0, r1 = ci * c[0], min((ci + 1) * c[0], self.grid[0])
            s0, s1 = cj * c[1], min((cj + 1) * c[1], self.grid[1])
            for kind, grid in self._grids.items():
                self._array(kind)[r0:r1, s0:s1] = grid[r0:r1, s0:s1]


# --- checking ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """A committed block that does not hold what was written.

    Attributes:
        block: ``(bi, bj)``.
        kind: ``'ntk'`` or ``'nngp'``.
        what: ``'missing'`` (a chunk file is gone), ``'unreadable'``,
            ``'differs'`` (checksum mismatch), ``'nonfinite'`` (NaN/inf) or
            ``'asymmetric'`` (not exactly its mirror's transpose).
        detail: one line for people.
    """

    block: tuple[int, int]
    kind: str
    what: str
    detail: str


@dataclasses.dataclass
class ScanResult:
    """What :func:`scan` found: problems, and how many blocks it checked."""

    problems: list[Problem]
    checked: int
    without_checksum: int

    @property
    def bad_blocks(self) -> np.ndarray:
        """``(k, 2)`` the distinct blocks with a problem."""
        return np.array(sorted({p.block for p in self.problems}), dtype=np.int64).reshape(-1, 2)


def _chunk_exists(arr: Any, coords: tuple[int, ...]) -> bool:
    from zarr.core.sync import sync

    key = arr.metadata.encode_chunk_key(coords + (0,) * (arr.ndim - len(coords)))
    return bool(sync((arr.store_path / key).exists()))


def _regions(
    store: Any, kind: str, bi: int, bj: int, mirrors: bool | None = None
) -> list[tuple[Any, tuple[int, ...], tuple[slice | int, ...]]]:
    """``[(array, chunk coords, selection)]`` of a block of ``kind``: its chunk, its mirror's
    if stored (or ``mirrors``), or (format 3) its packed chunk in ``diagonal_<kind>``."""
    plan, arr = store.plan, store.array(kind)
    (r0, r1), (c0, c1) = plan.rows(bi), plan.cols(bj)
    if plan.diagonal:
        return [(arr, (bi,), (slice(r0, r1),))]
    packed = store.packed_array(kind)
    if packed is not None and bi == bj:
        out = [(packed, (bi, 0), (bi, slice(0, packed_length(r1 - r0))))]
        return out + [(arr, (bi, bi), ())] * bool(mirrors)  # mirror_lower_blocks wrote it
    out = [(arr, (bi, bj), (slice(r0, r1), slice(c0, c1)))]
    mirrors = store.mirrored if mirrors is None else mirrors
    if mirrors and plan.symmetric and bi != bj:
        out.append((arr, (bj, bi), (slice(c0, c1), slice(r0, r1))))
    return out


def check_block(
    store: Any, kind: str, bi: int, bj: int, expected: int, symmetry: bool = False
) -> Problem | None:
    """Reread block ``(bi, bj)`` of ``kind`` (and its mirror); the first problem, if any.

    ``symmetry``: in a symmetric build, also require the block to equal its
    mirror's transpose exactly (a diagonal block: its own), as the workers write them.
    """
    dtype = store.array(kind).dtype
    parts = []
    regions = _regions(store, kind, bi, bj)
    for arr, coords, selection in regions:
        if not _chunk_exists(arr, coords):
            detail = f"chunk {coords} of {arr.basename} is missing"
            return Problem((bi, bj), kind, "missing", detail)
        try:
            parts.append(arr[selection])
        except Exception as e:
            detail = f"chunk {coords} of {arr.basename} cannot be read: {type(e).__name__}: {e}"
            return Problem((bi, bj), kind, "unreadable", detail.splitlines()[0])
    bad = sum(int((~np.isfinite(p)).sum()) for p in parts)
    if bad:
        return Problem((bi, bj), kind, "nonfinite", f"{bad} NaN/inf values in {kind}")
    if expected != NONE:
        got = checksum(*parts, dtype=dtype)
        if got != expected:
            detail = f"{kind} checksum {got:08x}, recorded {expected:08x}"
            return Problem((bi, bj), kind, "differs", detail)
    square = store.plan.symmetric and not store.plan.diagonal
    packed = store.packed and bi == bj  # format 3: symmetric by construction
    if symmetry and square and not packed and (bi == bj or len(parts) == 2):
        from bigntk.store._layout import mirror_permutation

        mirrored = np.transpose(parts[-1], mirror_permutation(store.dims))
        if not np.array_equal(parts[0], mirrored):
            n = int((parts[0] != mirrored).sum())
            of = "its own transpose" if bi == bj else f"the transpose of its mirror ({bj}, {bi})"
            return Problem((bi, bj), kind, "asymmetric", f"{n} {kind} values differ from {of}")
    return None


def scan(store: Any, symmetry: bool = False) -> ScanResult:
    """Reread every committed block of ``store``; see :class:`Problem` and :func:`check_block`."""
    done = store.plan.mask() & store.committed()
    grids = store.checksums.grids()
    problems, unchecked = [], 0
    blocks = np.argwhere(done)
    for bi, bj in blocks.tolist():
        for kind in store.kinds:
            expected = int(grids[kind][bi, bj])
            unchecked += expected == NONE
            problem = check_block(store, kind, bi, bj, expected, symmetry)
            if problem is not None:
                problems.append(problem)
    return ScanResult(problems, len(blocks), unchecked)


def uncommit(store: Any, blocks: np.ndarray) -> None:
    """Remove ``blocks`` from the manifest and delete their chunk files (and mirrors').

    Format 2 mirrors are deleted too, in case :func:`mirror_lower_blocks` wrote them.
    """
    from zarr.core.sync import sync

    blocks = np.asarray(blocks, dtype=np.int64).reshape(-1, 2)
    if not len(blocks):
        return
    done = store.committed()
    done[tuple(blocks.T)] = False
    store.checksums.forget(blocks)
    store.commit(blocks, done)  # checksums first, then the manifest
    for kind in store.kinds:
        for bi, bj in blocks.tolist():
            for arr, coords, _ in _regions(store, kind, bi, bj, mirrors=True):
                key = arr.metadata.encode_chunk_key(coords + (0,) * (arr.ndim - len(coords)))
                sync((arr.store_path / key).delete())


def repair(store: Any) -> ScanResult:
    """Scan ``store`` and uncommit its damaged blocks; a resumed build recomputes them."""
    result = scan(store)
    bad = result.bad_blocks
    if len(bad):
        logger.warning(
            "Repairing %s: %d damaged blocks will be recomputed: %s",
            store.path,
            len(bad),
            "; ".join(f"{p.block}: {p.detail}" for p in result.problems[:5]),
        )
        uncommit(store, bad)
    return result


def report(store: Any, result: ScanResult) -> list[str]:
    """Lines describing a scan, for ``bigntk verify --checksums``."""
    total = store.plan.num_blocks
    lines = [
        f"bigntk verify --checksums: {store.path}: {result.checked}/{total} blocks committed, "
        f"{len(store.kinds)} kinds reread"
    ]
    if result.without_checksum:
        lines.append(
            f"  note: {result.without_checksum} block-kinds have no recorded checksum (written "
            "before checksums existed); checked for missing chunks and NaN/inf only"
        )
    for p in result.problems:
        lines.append(f"  FAIL block {p.block} {p.kind}: {p.what}: {p.detail}")
    bad = len(result.bad_blocks)
    if bad:
        lines.append(
            f"FAIL: {bad} of {result.checked} committed blocks are damaged; run the build again "
            "with --repair (build_kernel(..., repair=True)) to recompute exactly those"
        )
    else:
        lines.append(f"PASS: all {result.checked} committed blocks match their checksums")
    return lines
