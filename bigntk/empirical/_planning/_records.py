"""Decisions measured by earlier processes, kept on disk (*decision records*).

Timing a program on both XLA:CPU paths, or AUTO's three candidates, costs
seconds: more than compiling the one program that is then run. A measured
decision is therefore written to disk and read back by every later process
that compiles the same program on the same machine, which then compiles only
the program chosen and times nothing.

A record is found by a key: the SHA-256 of what it decides (``kind``), the
program's StableHLO text (no debug information, so the same program gives the
same text in every process), JAX's and jaxlib's versions, the device kind, and
the machine (CPU model and count). Another JAX, another machine or a changed
model is another key: nothing is reused across them.

Location: ``$BIGNTK_CACHE_DIR/decisions``, else
``$XDG_CACHE_HOME/bigntk/decisions``, else ``~/.cache/bigntk/decisions``.
``BIGNTK_CACHE_DIR=`` (empty) turns records off: nothing is read or written.
Each record is a small JSON file written under a temporary name and renamed
(atomic on POSIX), so a concurrent reader sees a whole record or none. A record
that cannot be read is ignored, and a directory that cannot be written only
logs at DEBUG level: records are an optimisation, never an error.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import uuid
from pathlib import Path
from typing import Any

import jax

logger = logging.getLogger(__name__)

ENV = "BIGNTK_CACHE_DIR"
_VERSION = 1  # of the record format; part of the key


def directory() -> Path | None:
    """Where records are kept (None: turned off with ``BIGNTK_CACHE_DIR=``)."""
    root = os.environ.get(ENV)
    if root is not None:
        return Path(root).expanduser() / "decisions" if root.strip() else None
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "bigntk" / "decisions"


@functools.cache
def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(
                (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()} {model} x{os.cpu_count()}"


def program_text(lowered: Any) -> str | None:
    """The StableHLO text a record of ``lowered`` is keyed by (None: no text)."""
    try:
        return lowered.as_text()
    except Exception:  # noqa: BLE001 - no text, no record
        return None


def key(kind: str, text: str, device: Any) -> str:
    import jaxlib

    parts = (
        f"bigntk-records-v{_VERSION}",
        kind,
        jax.__version__,
        getattr(jaxlib, "__version__", "?"),
        f"{device.platform}:{device.device_kind}",
        _machine(),
        text,
    )
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def get(kind: str, text: str | None, device: Any) -> dict | None:
    """The record of ``kind`` for the program ``text`` on ``device`` (None: none)."""
    where = directory()
    if where is None or text is None:
        return None
    path = where / f"{key(kind, text, device)}.json"
    try:
        with open(path) as fh:
            record = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        logger.debug("Ignoring an unreadable decision record %s (%r).", path, e)
        return None
    return record if isinstance(record, dict) else None


def put(kind: str, text: str | None, device: Any, record: dict) -> None:
    """Keep ``record`` (JSON-serialisable) for the program ``text`` on ``device``."""
    where = directory()
    if where is None or text is None:
        return
    path = where / f"{key(kind, text, device)}.json"
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        where.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({**record, "jax": jax.__version__, "machine": _machine()}))
        os.replace(tmp, path)
    except OSError as e:
        logger.debug("Could not keep a decision record in %s (%r).", where, e)
        tmp.unlink(missing_ok=True)
