"""``open_kernel``: a built kernel as a lazy Dask array."""

from __future__ import annotations

import dask.array as da

from bigntk.build._store import KernelStore
from bigntk.errors import IncompleteKernelError


def open_kernel(path: str, kind: str = "ntk", allow_incomplete: bool = False) -> da.Array:
    """Open a kernel built by :func:`bigntk.build_kernel` as a Dask array.

    Args:
        path: the store (local path or fsspec URL).
        kind: ``'ntk'`` or ``'nngp'`` (one of the kinds that were built).
        allow_incomplete: open a build with missing blocks (their entries are NaN)
            instead of raising.

    Returns:
        A lazy array of shape ``(n1, n2, *out)`` (diagonal builds ``(n1, *out)``),
        one Dask chunk per block; nothing is read until computed.

    Raises:
        IncompleteKernelError: blocks are missing and ``allow_incomplete`` is False.
    """
    store = KernelStore.open(path)
    if kind not in store.kinds:
        raise KeyError(
            f"{path} holds the kinds {store.kinds}, not {kind!r}; pass kind={store.kinds[0]!r}."
        )
    missing = int((store.plan.mask() & ~store.committed()).sum())
    if missing and not allow_incomplete:
        raise IncompleteKernelError(
            f"{path} is missing {missing} of {store.plan.num_blocks} blocks. Resume the build "
            "by running the same build again, or pass allow_incomplete=True to read it with "
            "NaN for the missing entries."
        )
    return da.from_zarr(store.array(kind))
