"""What is at a store's path, on a local disk or an fsspec object store.

A build writes only into a path that holds nothing, only a writer lease (a
store being created, see ``_lease``), or a bigntk store; these helpers tell
which, and tidy what a killed writer or an abandoned lease left behind.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any

from bigntk.store._layout import LEASE_KEY
from bigntk.store._urls import is_url

logger = logging.getLogger(__name__)

LEASE_FOLDER, LEASE_NAME = LEASE_KEY.split("/")


def is_local(path: str) -> bool:
    return not is_url(path)


def local_path(path: str) -> pathlib.Path:
    return pathlib.Path(str(path).removeprefix("file://"))


def has_partial_files(path: str) -> bool:
    """Orphan ``*.partial`` files a killed writer left are in a local store."""
    if not is_local(path):
        return False
    return any(".partial" in n for _, _, files in os.walk(local_path(path)) for n in files)


def remove_partial_files(path: str) -> int:
    """Delete orphan ``*.partial`` files a killed writer left in a local store."""
    if not is_local(path):
        return 0
    count = 0
    for root, _, files in os.walk(local_path(path)):
        for name in files:
            if ".partial" in name:
                os.remove(os.path.join(root, name))
                count += 1
    if count:
        logger.info("Removed %d orphan temporary files from %s.", count, path)
    return count


def path_exists(path: str) -> bool:
    """Something (a file, a non-empty folder, an object prefix) is at ``path``."""
    if is_local(path):
        p = local_path(path)
        return p.exists() and (p.is_file() or any(p.iterdir()))

    fs, root = _fresh(path)
    return fs.exists(root)


def _fresh(path: str) -> tuple[Any, str]:
    """``(filesystem, root)`` of a URL, its cached listings dropped (another process writes)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(path))
    fs.invalidate_cache(root)
    return fs, root


def entries(path: str) -> list[str]:
    """Top-level names under ``path`` ([] for a file or nothing)."""
    if is_local(path):
        p = local_path(path)
        return sorted(e.name for e in p.iterdir()) if p.is_dir() else []

    fs, root = _fresh(path)
    if not fs.isdir(root):
        return []
    return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(root, detail=False))


def lease_only(path: str) -> bool:
    """Only the writer lease is at ``path``: a store being created (or whose creator died)."""
    if entries(path) != [LEASE_FOLDER]:
        return False
    if is_local(path):
        names = [e.name for e in (local_path(path) / LEASE_FOLDER).iterdir()]
    else:
        fs, root = _fresh(path)
        names = [e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(f"{root}/{LEASE_FOLDER}")]
    return all(n.startswith(LEASE_NAME) for n in names)


def remove_empty_folders(path: str) -> None:
    """Remove ``path`` and the folders under it if they hold no file (local paths only)."""
    if not is_local(path) or not local_path(path).is_dir():
        return
    root = local_path(path)
    for folder, _, _ in sorted(os.walk(root), reverse=True):
        if not os.listdir(folder):
            os.rmdir(folder)


def creatable(path: str) -> bool:
    """Nothing is at ``path``, or only a writer lease: a store may be created there."""
    return not path_exists(path) or lease_only(path)
