"""Diagonal blocks of a format-3 symmetric store, packed: each pair of rows stored once.

A diagonal block ``K[a, b, *out]`` of a symmetric kernel equals its own mirror
(``K[b, a]`` with the paired output axes swapped), so format 3 stores only its
pairs ``a <= b``, in row-major order of the upper triangle (``numpy.triu_indices``):
``s (s + 1) / 2`` entries per output entry for a block of ``s`` rows, instead of
``s^2``. They live in the array ``diagonal_<kind>`` of shape
``(grid, b (b + 1) / 2, *out)``, one chunk per diagonal block; a last, cropped
block of ``s < b`` rows fills the first ``s (s + 1) / 2`` pairs of its chunk
(the rest stays NaN).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

PACKED_PREFIX = "diagonal_"


def packed_length(rows: int) -> int:
    """Entries (per output entry) of a packed diagonal block of ``rows`` rows."""
    return rows * (rows + 1) // 2


@functools.lru_cache(maxsize=4)
def _upper(rows: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.triu_indices(rows)
    return a.astype(np.int32), b.astype(np.int32)


def pack(block: np.ndarray) -> np.ndarray:
    """``(s, s, *out)`` -> ``(s (s + 1) / 2, *out)``: the pairs ``a <= b`` of a diagonal block."""
    a, b = _upper(block.shape[0])
    return block[a, b]


def unpack(packed: np.ndarray, rows: int, perm: tuple[int, ...]) -> np.ndarray:
    """The full ``(rows, rows, *out)`` diagonal block from its packed pairs.

    Args:
        packed: ``(>= rows (rows + 1) / 2, *out)``; entries past the block's pairs are ignored.
        rows: the block's rows.
        perm: :func:`~bigntk.store._layout.mirror_permutation` of the kernel's dims.
    """
    data = packed[: packed_length(rows)]
    out_perm = (0, *(p - 1 for p in perm[2:]))  # the mirror on (pair, *out)
    a, b = _upper(rows)
    full = np.empty((rows, rows, *data.shape[1:]), data.dtype)
    full[b, a] = np.transpose(data, out_perm)  # lower: the mirrors of the upper pairs
    full[a, b] = data  # upper and the diagonal itself
    return full


def unpack_chunk(chunk: np.ndarray, rows: int, perm: tuple[int, ...]) -> np.ndarray:
    """:func:`unpack` of one chunk ``(1, pairs, *out)`` of ``diagonal_<kind>`` (a Dask task)."""
    return unpack(chunk[0], rows, perm)


def packed_arrays(group: Any, kinds: tuple[str, ...]) -> dict[str, Any]:
    """``{kind: diagonal_<kind>}`` of a format-3 store's group."""
    return {kind: group[PACKED_PREFIX + kind] for kind in kinds}
