"""Input data for a build: NumPy arrays, ``.npy`` files, Zarr arrays or URLs.

A source is small and picklable: workers receive it and read their own row
slices (a ``.npy`` file is memory-mapped, a Zarr array read chunk by chunk),
so the dataset never passes through the driver when it lives on shared
storage. In-memory arrays go through Ray's object store once.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from bigntk.errors import BuildInputError
from bigntk.store import is_url, protocol

_CHECK_ROWS_BYTES = 64 * 2**20
FINGERPRINT_MODES = ("full", "sample")


class Source:
    """Rows of an array, read by slices. Subclasses set ``shape``, ``dtype``, ``_open``."""

    shape: tuple[int, ...]
    dtype: np.dtype
    description: str

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)``, in native byte order (JAX takes no big-endian arrays)."""
        return _native(np.asarray(self._open()[start:stop]))

    def _open(self) -> Any:
        raise NotImplementedError

    def fingerprint(self, mode: str = "full") -> str:
        """A hash of shape, dtype and rows: every row (``'full'``) or 64 (``'sample'``)."""
        return self.scan(None, mode)

    def scan(self, name: str | None, mode: str = "full") -> str:
        """Check every value is finite (unless ``name`` is None) and hash the data.

        ``mode='full'`` hashes every row, streamed in chunks of about 64 MiB, in the
        same pass as the finiteness check (which reads every row anyway);
        ``'sample'`` hashes and checks only the first, the last and 62 rows spread
        between: for datasets too large to reread at every resume, at a price (an
        edit elsewhere goes unseen, and a non-finite value elsewhere shows up as
        NaN blocks, which ``bigntk verify STORE`` reports).

        Raises:
            BuildInputError: a non-finite value (naming ``name`` and its index), or
                an unknown ``mode``.
        """
        if mode not in FINGERPRINT_MODES:
            raise BuildInputError(
                f"data_fingerprint must be one of {FINGERPRINT_MODES}, got {mode!r} instead."
            )
        h = hashlib.sha256(f"{mode}{self.shape}{self.dtype}".encode())
        check = name is not None and np.issubdtype(self.dtype, np.inexact)
        if mode == "sample":
            n = len(self)
            rows = sorted({0, n - 1, *np.linspace(0, n - 1, 62).astype(int).tolist()}) if n else []
            data = self._open()
            for r in rows:
                row = _native(np.asarray(data[r : r + 1]))
                h.update(np.ascontiguousarray(row).tobytes())
                if check:
                    _check_finite(row, r, name)
            return h.hexdigest()[:16]
        row_bytes = max(1, math.prod(self.shape[1:]) * self.dtype.itemsize)
        step = max(1, _CHECK_ROWS_BYTES // row_bytes)
        for start in range(0, len(self), step):
            chunk = np.ascontiguousarray(self.read(start, min(start + step, len(self))))
            h.update(chunk.reshape(-1).view(np.uint8))  # the bytes tobytes() gives, uncopied
            if check:
                _check_finite(chunk, start, name)
        return h.hexdigest()[:16]


def _check_finite(chunk: np.ndarray, start: int, name: str) -> None:
    with np.errstate(all="ignore"):  # a finite sum has no NaN/inf terms (half the cost)
        if np.isfinite(chunk.sum(dtype=chunk.dtype)):
            return
    bad = ~np.isfinite(chunk)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        index = (index[0] + start, *index[1:])
        raise BuildInputError(
            f"{name} has a non-finite value ({chunk[bad][0]}) at index {index}; "
            "clean the data (e.g. np.nan_to_num) before building a kernel."
        )


class MemorySource(Source):
    """An in-memory array; shipped to workers through Ray's object store."""

    def __init__(self, array: np.ndarray):
        array = np.asarray(array)  # (ascontiguousarray would make a 0-d array 1-d)
        self._array = _native(np.ascontiguousarray(array) if array.ndim else array)
        self._ref = None
        self.shape, self.dtype = self._array.shape, self._array.dtype
        self.description = f"in-memory array {self.shape} {self.dtype}"

    def for_workers(self) -> MemorySource:
        import ray

        if self._ref is None:
            self._ref = ray.put(self._array)
        clone = object.__new__(MemorySource)
        clone.__dict__.update(self.__dict__, _array=None)
        return clone

    def _open(self) -> np.ndarray:
        if self._array is None:
            import ray

            self._array = ray.get(self._ref)
        return self._array


class NpySource(Source):
    """A ``.npy`` file, memory-mapped."""

    def __init__(self, path: str):
        self.path = str(path)
        arr = self._open()
        self.shape, self.dtype = arr.shape, arr.dtype.newbyteorder("=")
        self.description = f"{self.path} {self.shape} {self.dtype}"

    def _open(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")


class ZarrSource(Source):
    """A Zarr array (local path or fsspec URL, optionally ``path::array``)."""

    def __init__(self, url: str):
        self.url = str(url)
        arr = self._open()
        self.shape, self.dtype = tuple(arr.shape), np.dtype(arr.dtype).newbyteorder("=")
        self.description = f"{self.url} {self.shape} {self.dtype}"

    def _open(self):
        import zarr

        store, _, name = self.url.partition("::")
        return zarr.open_array(store, path=name or None, mode="r")


def _native(a: np.ndarray) -> np.ndarray:
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def as_source(x: Any, name: str) -> Source:
    """Wrap an array, a ``.npy`` path, a Zarr array, or a Zarr path/URL."""
    if isinstance(x, Source):
        return x
    if isinstance(x, str | bytes) or hasattr(x, "__fspath__"):
        path = str(x)
        try:
            if is_url(path):
                return url_source(path)
            return NpySource(path) if path.endswith(".npy") else ZarrSource(path)
        except (FileNotFoundError, OSError, ValueError, KeyError) as e:
            raise BuildInputError(
                f"{name}={path!r} could not be read as a .npy file or a Zarr array: {e}"
            ) from None
    try:
        import zarr

        if isinstance(x, zarr.Array):
            if isinstance(x.store, zarr.storage.MemoryStore):  # workers cannot see it
                return MemorySource(np.asarray(x[...]))
            return ZarrSource(f"{x.store}::{x.path}" if x.path else str(x.store))
    except ImportError:  # pragma: no cover
        pass
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return MemorySource(np.asarray(x))
    raise BuildInputError(
        f"{name} must be a NumPy/JAX array, a .npy path, a Zarr array or a Zarr path/URL, got "
        f"{type(x).__name__} instead."
    )


class FsspecNpySource(Source):
    """A C-ordered ``.npy`` file behind an fsspec URL; a row slice is one ranged read."""

    def __init__(self, url: str):
        import fsspec

        self.url = str(url)
        fs, path = fsspec.core.url_to_fs(self.url)
        with fs.open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(fh)
            self._offset = fh.tell()
        if fortran or dtype.hasobject or not shape:
            raise BuildInputError(
                f"{self.url}: expected a C-ordered numeric .npy array of rank >= 1, got shape "
                f"{shape} {dtype} (fortran_order={fortran}); save it with "
                "np.save(path, np.ascontiguousarray(x))."
            )
        self._file_dtype = np.dtype(dtype)
        self.shape, self.dtype = tuple(shape), self._file_dtype.newbyteorder("=")
        self._row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        self.description = f"{self.url} {self.shape} {self.dtype}"

    def read(self, start: int, stop: int) -> np.ndarray:
        import fsspec

        start, stop = max(0, start), min(stop, self.shape[0])
        if stop <= start:
            return np.empty((0, *self.shape[1:]), self.dtype)
        fs, path = fsspec.core.url_to_fs(self.url)
        data = fs.cat_file(
            path,
            start=self._offset + start * self._row_bytes,
            end=self._offset + stop * self._row_bytes,
        )
        rows = np.frombuffer(data, self._file_dtype).reshape(stop - start, *self.shape[1:])
        return rows.astype(self.dtype, copy=False)  # native byte order, as every source

    def _open(self) -> _Rows:
        return _Rows(self)


class _Rows:
    """``source[i]`` and ``source[a:b]`` for a source that reads row ranges."""

    def __init__(self, source: FsspecNpySource):
        self._source = source

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice) and index.step in (None, 1):
            start, stop, _ = index.indices(self._source.shape[0])
            return self._source.read(start, stop)
        i = int(index) % self._source.shape[0]
        return self._source.read(i, i + 1)[0]


def url_source(url: str) -> Source:
    """A source for an input at a URL: ``.npy`` by ranges, Zarr through Zarr.

    ``memory://`` inputs are read here, into memory, since workers in other
    processes cannot see them.
    """
    source = FsspecNpySource(url) if url.endswith(".npy") else ZarrSource(url)
    if protocol(url) == "memory":
        return MemorySource(source.read(0, source.shape[0]))
    return source
