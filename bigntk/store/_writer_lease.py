"""The writer lease a build holds at a store's path, from before the store exists to the end.

See :mod:`bigntk.store._lease` for the lease itself (acquire, heartbeat, take-over).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from zarr.core.sync import sync
from zarr.storage._common import make_store_path

from bigntk.store._lease import DEFAULT_TTL_S, StoreLease
from bigntk.store._paths import creatable, path_exists, remove_empty_folders
from bigntk.store._reader import KernelStore
from bigntk.store._writer import StoreWriter


def _existing_store_path(path: str, mode: str = "r") -> Any | None:
    """The ``StorePath`` of an existing bigntk store at ``path``, else None."""
    opener = StoreWriter if mode == "r+" else KernelStore
    try:
        return opener.open(path).group.store_path
    except Exception:  # missing, not a store, another format: create_or_resume decides
        return None


def _new_store_path(path: str) -> Any | None:
    """The ``StorePath`` where a store is to be created: nothing (or only a lease) is there."""
    if not creatable(path):
        return None  # something else is there: create_or_resume refuses it
    return sync(make_store_path(str(path), mode="a"))


class WriterLease:
    """The lease a build holds at a store's path, from before the store exists to the end.

    On a path holding a store, the lease of that store; on a path holding
    nothing, a lease object at the path itself, created before the store is,
    so that two drivers starting the same new store at once never both create
    it. ``create_or_resume`` keeps the lease when it replaces a store
    (``overwrite``); :meth:`hold` then guards the store's manifest commits.
    """

    def __init__(self, path: str, wait: float | None, ttl: float = DEFAULT_TTL_S):
        self.path, self.wait, self.ttl = str(path), wait, ttl
        self.lease: StoreLease | None = None
        self._created_path = False
        where = _existing_store_path(self.path, mode="r+")
        if where is None:
            self._created_path = not path_exists(self.path)
            where = _new_store_path(self.path)
        if where is not None:
            self.lease = StoreLease(where, self.path, ttl)
            try:
                self.lease.acquire(wait)
            except BaseException:
                self._tidy()
                raise

    def hold(self, store: StoreWriter) -> StoreLease:
        """Hold the lease of ``store``; guard its manifest commits."""
        if self.lease is None:
            self.lease = StoreLease(store.group.store_path, self.path, self.ttl)
            self.lease.acquire(self.wait)
        else:
            self.lease.ensure()
        store.commit_guard = self.lease.check
        return self.lease

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
        self._tidy()

    def _tidy(self) -> None:
        """Remove the empty folders a lease left at a path where no store was created."""
        if self._created_path:
            remove_empty_folders(self.path)


@contextlib.contextmanager
def writer_lease(path: str, wait: float | None = 0.0) -> Iterator[WriterLease]:
    """Hold the writer lease of the store at ``path`` for the block; released on exit."""
    lease = WriterLease(path, wait)
    try:
        yield lease
    finally:
        lease.release()


def holder(path: str) -> dict | None:
    """The lease document of the store at ``path`` (None: no build holds it)."""
    store_path = _existing_store_path(path)
    return None if store_path is None else StoreLease(store_path, str(path)).read()
