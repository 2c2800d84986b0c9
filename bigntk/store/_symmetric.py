"""The full symmetric kernel of a format-2/3 store, whose lower blocks are not on disk.

Each lower block ``(bi, bj)``, ``bi > bj``, is the transpose
(:func:`mirror_permutation`) of the stored block ``(bj, bi)``; in format 3 each
diagonal block is unpacked from its stored pairs (``_packed``):

- :func:`symmetric_dask` (``open_kernel``): a Dask graph over the stored chunks,
  one task per block, a lower block a transpose task of its mirror's chunk, so a
  full read reads each stored chunk once;
- :class:`SymmetricArray` (``KernelStore.values``): a NumPy-style array-like for
  random access (the checks' sampled submatrices).

``mirror_lower_blocks`` writes the lower blocks out for readers that need every
chunk on disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from bigntk.store._layout import Plan
from bigntk.store._packed import unpack, unpack_chunk

if TYPE_CHECKING:
    import dask.array as da


def symmetric_dask(array: Any, plan: Plan, perm: tuple[int, ...], packed: Any = None) -> da.Array:
    """``(n, n, *out)`` lazy: the stored chunks, and the lower blocks as their transposes.

    One Dask chunk per block; the graph has one entry per block (a 489 x 489 grid,
    10^6 rows in blocks of 2048, builds in about a second). ``packed``: format 3's
    ``diagonal_<kind>`` array, whose chunks the diagonal blocks are unpacked from.
    """
    import dask.array as da  # here: the workers that import the store need no Dask
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    src = da.from_zarr(array)
    sources = [src] if packed is None else [src, da.from_zarr(packed)]
    name = "bigntk-symmetric-" + tokenize(*(s.name for s in sources), perm)
    lead = (0,) * (array.ndim - 2)  # the output axes are one chunk each
    g = plan.grid[0]
    tasks: dict = {}
    for i in range(g):
        for j in range(g):
            upper = (src.name, min(i, j), max(i, j), *lead)
            if i == j and packed is not None:
                rows = plan.rows(i)[1] - plan.rows(i)[0]
                task = (unpack_chunk, (sources[1].name, i, 0, *lead), rows, perm)
            else:
                task = upper if i <= j else (np.transpose, upper, perm)
            tasks[(name, i, j, *lead)] = task
    graph = HighLevelGraph.from_collections(name, tasks, dependencies=sources)
    return da.Array(graph, name, chunks=src.chunks, dtype=src.dtype)


def read_block(array: Any, packed: Any, plan: Plan, perm: tuple[int, ...], bi: int, bj: int):
    """Stored block ``(bi, bj)``, ``bi <= bj``, whole; a format-3 diagonal block unpacked."""
    (r0, r1), (c0, c1) = plan.rows(bi), plan.cols(bj)
    if packed is not None and bi == bj:
        return unpack(np.asarray(packed[bi]), r1 - r0, perm)
    return np.asarray(array[r0:r1, c0:c1])


class SymmetricArray:
    """``(n, n, *out)``: the stored array with its lower blocks served from the upper ones.

    Args:
        array: the stored Zarr array (upper blocks and, format 2, the diagonal on disk).
        plan: the store's symmetric plan.
        perm: :func:`mirror_permutation` of the store's dims.
        packed: format 3's ``diagonal_<kind>`` array (the diagonal blocks, packed), or None.

    Supports basic indexing (ints, slices with any step, ``...``) and
    ``oindex[rows, cols]`` with integer arrays on the first two axes.
    """

    def __init__(self, array: Any, plan: Plan, perm: tuple[int, ...], packed: Any = None):
        self.array, self.plan, self.perm, self.packed = array, plan, tuple(perm), packed
        self._diagonal: tuple[int, np.ndarray] | None = None  # the last unpacked block
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.ndim = len(self.shape)
        self.chunks = tuple(array.chunks)
        self.oindex = _OIndex(self)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        bounds, steps, drop = _normalize(key, self.shape)
        rows, cols = np.arange(*bounds[0]), np.arange(*bounds[1])
        out = self._read(rows, cols, tuple(slice(*b) for b in bounds[2:]))
        out = out[tuple(slice(None, None, s) for s in steps)]
        return out[tuple(0 if d else slice(None) for d in drop)]

    def _read(self, rows: np.ndarray, cols: np.ndarray, rest: tuple[slice, ...]) -> np.ndarray:
        """Rows ``rows`` and columns ``cols`` (sorted runs), the output axes by ``rest``."""
        b = self.plan.block
        if len(rows) and rows[0] // b == rows[-1] // b and cols[0] // b == cols[-1] // b:
            return self._piece(rows, cols, rest, rows[0] // b, cols[0] // b)  # one block: no copy
        out = np.empty((len(rows), len(cols), *_lengths(rest, self.shape[2:])), self.dtype)
        for bi in np.unique(rows // b).tolist():
            ri = np.flatnonzero(rows // b == bi)
            for bj in np.unique(cols // b).tolist():
                ci = np.flatnonzero(cols // b == bj)
                out[ri[:, None], ci] = self._piece(rows[ri], cols[ci], rest, bi, bj)
        return out

    def _piece(self, r: np.ndarray, c: np.ndarray, rest: tuple, bi: int, bj: int) -> np.ndarray:
        """Rows ``r`` x columns ``c`` of block ``(bi, bj)``; a lower block read as its mirror's
        transpose, a packed diagonal block unpacked (and kept for the next piece of it)."""
        if self.packed is not None and bi == bj:
            if self._diagonal is None or self._diagonal[0] != bi:
                block = read_block(self.array, self.packed, self.plan, self.perm, bi, bi)
                self._diagonal = (bi, block)
            r0 = self.plan.rows(bi)[0]
            return self._diagonal[1][np.ix_(r - r0, c - r0)][(slice(None), slice(None), *rest)]
        if bi <= bj:
            return _take(self.array, r, c, rest)
        swapped = tuple(rest[self.perm[a] - 2] for a in range(2, self.ndim))
        return np.transpose(_take(self.array, c, r, swapped), self.perm)


class _OIndex:
    """``oindex[rows, cols, *rest]``: integer arrays (or slices) on the two batch axes."""

    def __init__(self, parent: SymmetricArray):
        self.parent = parent

    def __getitem__(self, key: Any) -> np.ndarray:
        p = self.parent
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (p.ndim - len(key))
        lead = [np.arange(n)[k] for k, n in zip(key[:2], p.shape[:2], strict=True)]
        rows, cols = (np.atleast_1d(a).astype(np.int64) for a in lead)
        rest = key[2:]
        if not all(isinstance(k, slice) and k.step in (None, 1) for k in rest):
            raise IndexError(f"oindex takes slices of step 1 on the output axes, got {rest}.")
        rest = tuple(slice(*k.indices(n)[:2]) for k, n in zip(rest, p.shape[2:], strict=True))
        order_r, order_c = np.argsort(rows, kind="stable"), np.argsort(cols, kind="stable")
        got = p._read(rows[order_r], cols[order_c], rest)
        out = np.empty_like(got)
        out[np.ix_(order_r, order_c)] = got
        return out[tuple(0 if np.ndim(a) == 0 else slice(None) for a in lead)]


def _take(array: Any, r: np.ndarray, c: np.ndarray, rest: tuple) -> np.ndarray:
    """``array[r, c, *rest]``: one slice read when ``r`` and ``c`` are runs, else ``oindex``."""
    if _is_run(r) and _is_run(c):
        return np.asarray(array[(slice(r[0], r[-1] + 1), slice(c[0], c[-1] + 1), *rest)])
    return np.asarray(array.oindex[(r, c, *rest)])


def _is_run(i: np.ndarray) -> bool:
    return len(i) > 0 and int(i[-1]) - int(i[0]) + 1 == len(i) and bool((np.diff(i) == 1).all())


def _lengths(rest: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(len(range(*k.indices(n))) for k, n in zip(rest, shape, strict=True))


def _normalize(key: Any, shape: tuple[int, ...]) -> tuple[list, list, list]:
    """Basic index -> per axis ``(start, stop)`` of step 1, the step to apply, whether to drop."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (len(shape) - len(key) + 1) + key[at + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices: {len(key)} for an array of {len(shape)} axes.")
    key = key + (slice(None),) * (len(shape) - len(key))
    bounds, steps, drop = [], [], []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step < 0:
                raise IndexError(f"negative steps are not supported, got {k}.")
            stop = max(start, stop)
            bounds.append((start, stop))
            steps.append(step)
            drop.append(False)
            continue
        i = int(k) + (n if int(k) < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"index {k} is out of bounds for an axis of size {n}.")
        bounds.append((i, i + 1))
        steps.append(1)
        drop.append(True)
    return bounds, steps, drop
