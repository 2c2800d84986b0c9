"""Writing out the lower (and format 3's diagonal) blocks of a symmetric store, for raw
Zarr readers."""

from __future__ import annotations

import numpy as np

from bigntk.errors import IncompleteKernelError
from bigntk.store._layout import mirror_permutation, serves_mirrors
from bigntk.store._writer import StoreWriter
from bigntk.store._writer_lease import writer_lease


def mirror_lower_blocks(path: str) -> int:
    """Write the lower blocks of a complete format-2/3 symmetric store to disk (format 3:
    and the diagonal blocks, unpacked, into the kernel array); return how many blocks.

    For readers of the raw Zarr arrays (``xarray.open_zarr``, ``zarr``), which
    otherwise see NaN there; :func:`~bigntk.store.open_kernel` never needs them
    (it serves each lower block from its stored mirror). The store's writer lease
    is held meanwhile, so no build writes it at the same time. A later repair
    deletes the mirrors of the blocks it recomputes: run this again after it.

    Raises:
        IncompleteKernelError: blocks are missing (finish the build first).
    """
    with writer_lease(path):
        store = StoreWriter.open(path)
        if not serves_mirrors(store.format, store.plan):
            return 0  # every block is on disk already
        missing = int((store.plan.mask() & ~store.committed()).sum())
        if missing:
            raise IncompleteKernelError(
                f"{path} is missing {missing} of {store.plan.num_blocks} blocks; mirror the "
                "lower blocks once the build is complete (run the same build again to finish)."
            )
        perm = mirror_permutation(store.dims)
        upper = np.argwhere(np.triu(store.plan.mask(), 1))
        for bi, bj in upper.tolist():
            (r0, r1), (c0, c1) = store.plan.rows(bi), store.plan.cols(bj)
            for kind in store.kinds:
                arr = store.array(kind)
                arr[c0:c1, r0:r1] = np.transpose(arr[r0:r1, c0:c1], perm)
        diagonal = range(store.plan.grid[0]) if store.packed else range(0)
        for bi in diagonal:
            r0, r1 = store.plan.rows(bi)
            for kind in store.kinds:
                store.array(kind)[r0:r1, r0:r1] = store.block(kind, bi, bi)
        return len(upper) + len(diagonal)
