"""Paths and fsspec URLs (``s3://``, ``gs://``, ``memory://``, ...).

Zarr opens a URL itself (``zarr.storage.FsspecStore``); this module holds the
one test of "is this a URL", its protocol, and the environment variables that
configure a filesystem (credentials, endpoints) and must reach the workers: they
travel in the actors' ``runtime_env`` (so they are visible to whoever can read
the Ray dashboard; on a real cluster prefer instance roles or workload identity).

Each chunk of a store is one object written whole by one worker (stores use
one chunk per block and no sharding), so no two processes ever write parts of
the same object.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

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
