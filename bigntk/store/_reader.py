"""Reading a kernel store: :class:`KernelStore` and ``open_kernel`` (a lazy Dask array)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from bigntk.errors import IncompleteKernelError, NotAStoreError
from bigntk.store._checksum import ChecksumTable
from bigntk.store._layout import (
    MANIFEST,
    READABLE_FORMATS,
    Plan,
    mirror_permutation,
    mirrors_on_disk,
    packs_diagonal,
    serves_mirrors,
)
from bigntk.store._packed import packed_arrays
from bigntk.store._paths import is_local, lease_only, local_path, path_exists
from bigntk.store._symmetric import SymmetricArray, read_block, symmetric_dask

if TYPE_CHECKING:
    import dask.array as da


class KernelStore:
    """A bigntk kernel store, read-only (see :mod:`bigntk.store._layout` for its layout).

    :class:`~bigntk.store.StoreWriter` adds what a build does to it.
    """

    def __init__(self, group: zarr.Group, path: str):
        self.group = group
        self.path = str(path)
        meta = dict(group.attrs)["bigntk"]
        self.spec: dict = meta["spec"]
        self.spec_hash: str = meta["spec_hash"]
        layout = self.spec["layout"]
        self.kinds: tuple[str, ...] = tuple(self.spec["kinds"])
        self.dims: list[str] = list(layout["dims"])
        self.plan = Plan(
            layout["n1"], layout["n2"], layout["block"], layout["symmetric"], layout["diagonal"]
        )
        self._arrays = {kind: group[kind] for kind in self.kinds}
        self._manifest = group[MANIFEST]
        self._mirror = mirror_permutation(self.dims)
        self.format: int = int(meta["format"])
        #: the mirrors of off-diagonal blocks are on disk (format 1 symmetric builds)
        self.mirrored: bool = mirrors_on_disk(self.format, self.plan)
        #: the diagonal blocks are packed in ``diagonal_<kind>`` (format 3 symmetric builds)
        self.packed: bool = packs_diagonal(self.format, self.plan)
        self._packed = packed_arrays(group, self.kinds) if self.packed else {}
        self.checksums = ChecksumTable(group, self.kinds, self.plan.grid, self._manifest.chunks)

    # --- opening --------------------------------------------------------------------------

    _MODE = "r"  # Zarr's open mode; the writer's is "r+"

    @classmethod
    def open(cls, path: str, mode: str | None = None) -> KernelStore:
        """Open an existing store; raise :class:`NotAStoreError` if it is not one.

        ``mode`` is deprecated: a store opened to be written is a
        :class:`~bigntk.store.StoreWriter` (``StoreWriter.open(path)``).
        """
        if mode is not None and mode != cls._MODE:
            import warnings

            from bigntk.store._writer import StoreWriter

            warnings.warn(
                f"KernelStore.open(path, mode={mode!r}) is deprecated: readers get a read-only "
                "KernelStore; open a store for writing with bigntk.store.StoreWriter.open(path).",
                DeprecationWarning,
                stacklevel=2,
            )
            if mode != "r":
                return StoreWriter.open(path)
        if not (local_path(path).exists() if is_local(path) else path_exists(path)):
            raise FileNotFoundError(f"No kernel store at {path}: the path does not exist.")
        if lease_only(path):
            raise FileNotFoundError(
                f"No kernel store at {path} yet: a build holds the path and is creating it "
                "(or died doing so; the next build takes its lease over)."
            )
        try:
            # bigntk writes Zarr v3 only; v3 metadata is JSON and names no code to run
            group = zarr.open_group(str(path), mode=cls._MODE, zarr_format=3)
        except Exception as e:  # zarr raises several types for "not a group"
            raise NotAStoreError(
                f"{path} exists but is not a bigntk kernel store (not a Zarr group: {e})."
            ) from None
        if "bigntk" not in dict(group.attrs):
            raise NotAStoreError(
                f"{path} is a Zarr group but not a bigntk kernel store (no 'bigntk' attributes)."
            )
        version = dict(group.attrs)["bigntk"].get("format")
        if version not in READABLE_FORMATS:
            raise NotAStoreError(
                f"{path} is a bigntk store of format {version}; this bigntk reads formats "
                f"{READABLE_FORMATS}. Rebuild it, or open it with the bigntk version that made it."
            )
        return cls(group, path)

    @classmethod
    def create_or_resume(cls, path: str, spec: dict, **kwargs: Any) -> tuple[Any, bool]:
        """Deprecated here: :meth:`bigntk.store.StoreWriter.create_or_resume`."""
        import warnings

        from bigntk.store._writer import StoreWriter

        warnings.warn(
            "KernelStore.create_or_resume is deprecated: use "
            "bigntk.store.StoreWriter.create_or_resume (readers get a read-only KernelStore).",
            DeprecationWarning,
            stacklevel=2,
        )
        return StoreWriter.create_or_resume(path, spec, **kwargs)

    # --- data -----------------------------------------------------------------------------

    def array(self, kind: str) -> zarr.Array:
        """The stored Zarr array of ``kind`` (symmetric builds: format 2's lower blocks and
        format 3's lower and diagonal blocks absent, NaN)."""
        return self._arrays[kind]

    def packed_array(self, kind: str) -> zarr.Array | None:
        """Format 3 symmetric builds: ``diagonal_<kind>``, the packed diagonal blocks; else None."""
        return self._packed.get(kind)

    def values(self, kind: str) -> zarr.Array | SymmetricArray:
        """The kernel ``(n1, n2, *out)`` of ``kind``, every block (indexing reads it).

        The stored array, or for a format 2/3 symmetric build a :class:`SymmetricArray`
        serving the lower blocks as transposes of the stored upper ones (and format 3's
        diagonal blocks unpacked).
        """
        if serves_mirrors(self.format, self.plan):
            packed = self.packed_array(kind)
            return SymmetricArray(self._arrays[kind], self.plan, self._mirror, packed)
        return self._arrays[kind]

    def block(self, kind: str, bi: int, bj: int) -> np.ndarray:
        """Stored block ``(bi, bj)`` of ``kind`` read whole (a packed diagonal block unpacked)."""
        if self.plan.diagonal:
            r0, r1 = self.plan.rows(bi)
            return np.asarray(self._arrays[kind][r0:r1])
        packed = self.packed_array(kind)
        return read_block(self._arrays[kind], packed, self.plan, self._mirror, bi, bj)

    def committed(self) -> np.ndarray:
        """Boolean grid of committed blocks."""
        return self._manifest[...].astype(bool)

    @property
    def meta(self) -> dict:
        return dict(self.group.attrs)["bigntk"]


def open_kernel(
    path: str, kind: str = "ntk", allow_incomplete: bool = False, xarray: bool = False
) -> da.Array | Any:
    """Open a kernel built by :func:`bigntk.build_kernel` as a Dask array.

    Args:
        path: the store (local path or fsspec URL).
        kind: ``'ntk'`` or ``'nngp'`` (one of the kinds that were built).
        allow_incomplete: open a build with missing blocks (their entries are NaN)
            instead of raising.
        xarray: return an ``xarray.DataArray`` (dims ``x1, x2, out...``) around the
            Dask array (needs ``xarray`` installed).

    Returns:
        A lazy array (``xarray``: an ``xarray.DataArray`` around it) of shape
        ``(n1, n2, *out)`` (diagonal builds ``(n1, *out)``), one Dask chunk per block;
        nothing is read until computed. A symmetric build (format 2 and 3) stores only
        the blocks ``bi <= bj``: each lower chunk is read as the transpose of its stored
        mirror, and (format 3) each diagonal block unpacked from its stored pairs
        ``a <= b``, so the array is exactly symmetric. (``xarray.open_zarr`` or a raw
        Zarr read of such a store sees NaN in those blocks;
        :func:`bigntk.store.mirror_lower_blocks` writes them out for such readers.)

    Raises:
        IncompleteKernelError: blocks are missing and ``allow_incomplete`` is False.
    """
    import dask.array as da  # here: the builder's workers and the solver's actors need no Dask

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
    if serves_mirrors(store.format, store.plan):
        packed = store.packed_array(kind)
        array = symmetric_dask(store.array(kind), store.plan, store._mirror, packed)
    else:
        array = da.from_zarr(store.array(kind))
    return _as_xarray(array, store.dims) if xarray else array


def _as_xarray(array: da.Array, dims: list[str]) -> Any:
    try:
        import xarray
    except ImportError:
        raise ImportError(
            "open_kernel(..., xarray=True) needs the xarray package, which is not installed; "
            "install it (pip install xarray), or call open_kernel without xarray=True for "
            "the Dask array."
        ) from None
    return xarray.DataArray(array, dims=dims)
