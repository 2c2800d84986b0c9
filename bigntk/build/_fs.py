"""Stores and inputs behind fsspec URLs (``s3://``, ``gs://``, ``memory://``, ...).

Zarr opens a URL itself (``zarr.storage.FsspecStore``); this module covers what
a build needs around that:

- which paths every worker process can reach: ``memory://`` lives inside one
  process, so it may hold inputs (read into memory by the driver) but never a
  store that Ray workers write to;
- ``.npy`` inputs at a URL, read by row ranges (one ranged GET per slice);
- the environment variables that configure a filesystem (credentials,
  endpoints) and must reach the workers: they travel in the actors'
  ``runtime_env`` (so they are visible to whoever can read the Ray
  dashboard; on a real cluster prefer instance roles or workload identity).

Each chunk of a store is one object written whole by one worker (stores use
one chunk per block and no sharding), so no two processes ever write parts of
the same object.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from bigntk.build._data import MemorySource, Source
from bigntk.errors import BuildInputError

# environment variables read by each protocol's filesystem (s3fs/botocore, gcsfs, adlfs)
_ENV_PREFIXES = {
    "s3": ("AWS_",),
    "s3a": ("AWS_",),
    "gs": ("GOOGLE_", "GCSFS_"),
    "gcs": ("GOOGLE_", "GCSFS_"),
    "az": ("AZURE_",),
    "abfs": ("AZURE_",),
}


def is_url(path: Any) -> bool:
    """True for an fsspec URL other than ``file://``."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def protocol(path: Any) -> str:
    """``'s3'`` for ``s3://b/k``; ``'file'`` for a local path."""
    return str(path).split("://", 1)[0] if is_url(path) else "file"


def check_store_url(path: str) -> None:
    """Refuse a store that Ray workers (other processes) could not write to."""
    if protocol(path) == "memory":
        raise BuildInputError(
            f"path={path!r}: a memory:// store lives inside one process, and the workers are "
            "separate Ray processes that would write to their own copies. Use a local or shared "
            "path, or an object store URL such as s3://bucket/kernels/k.zarr."
        )


def forwarded_env(paths: Iterable[Any], environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables the workers need to open ``paths``.

    ``FSSPEC_*`` variables (fsspec's own configuration) always, plus each URL
    protocol's variables: ``AWS_*`` for ``s3://``, ``GOOGLE_*``/``GCSFS_*`` for
    ``gs://``, ``AZURE_*`` for ``az://``/``abfs://``.
    """
    environ = dict(os.environ if environ is None else environ)
    prefixes = ["FSSPEC_"]
    for path in paths:
        if path is not None and is_url(path):
            prefixes += _ENV_PREFIXES.get(protocol(path), ())
    return {k: v for k, v in environ.items() if k.startswith(tuple(prefixes))}


def source_urls(*sources: Any) -> list[str]:
    """The URLs data sources read from (``url`` or ``path`` attributes)."""
    out = []
    for src in sources:
        for attr in ("url", "path"):
            value = getattr(src, attr, None)
            if isinstance(value, str) and is_url(value):
                out.append(value)
    return out


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
    from bigntk.build._data import ZarrSource

    source = FsspecNpySource(url) if url.endswith(".npy") else ZarrSource(url)
    if protocol(url) == "memory":
        return MemorySource(source.read(0, source.shape[0]))
    return source
