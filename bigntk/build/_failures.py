"""Failures under a build, as one clear error each.

A block's failure is summarised by the last line of the worker's traceback
(:func:`error_summary`), without Ray's terminal colours; the whole traceback
stays chained to the error.

A full disk: a worker that cannot write a chunk fails its block (retried, then
:class:`~bigntk.errors.BlockFailedError` with Ray's traceback inside); the
driver that cannot write the manifest raises a bare ``OSError``. Both become
:class:`~bigntk.errors.StoreFullError`, naming the store, what is kept and
how to resume.
"""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Iterator
from typing import Any

from bigntk.errors import BlockFailedError, StoreFullError

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_MARKS = ("No space left on device", "Disk quota exceeded", "File too large")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_summary(e: BaseException) -> str:
    """The last line of an error's text (a Ray task error's: the worker's exception)."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


_FIELD = re.compile(r"^\s*(pid|ip): (\S+)$", re.MULTILINE)
_EXIT_TYPE = re.compile(r"Worker exit type: (\S+)")
_EXIT_DETAIL = re.compile(r"Worker exit detail: (.*?\.)(?: |$)")
_RAY_OOM = re.compile(r"low on memory|memory monitor|OutOfMemory", re.IGNORECASE)


def death_cause(e: BaseException) -> str:
    """What Ray says killed a worker: its pid and host, the exit type and detail.

    Ray names out-of-memory kills by its own memory monitor; a process killed
    by the kernel (its OOM killer, a segfault) or that exits on its own reaches
    Ray as a lost connection, and is described as such, never guessed at.
    """
    text = _ANSI.sub("", str(e))
    fields = dict(_FIELD.findall(text))
    parts = []
    if "pid" in fields:
        parts.append(
            f"worker pid {fields['pid']}" + (f" on {fields['ip']}" if "ip" in fields else "")
        )
    if isinstance(e, getattr(_ray_exceptions(), "OutOfMemoryError", ())) or _RAY_OOM.search(text):
        parts.append("out of memory: killed by Ray's memory monitor")
    kind, detail = _EXIT_TYPE.search(text), _EXIT_DETAIL.search(text)
    if kind or detail:
        parts.append(": ".join(m.group(1) for m in (kind, detail) if m))
    if not parts:
        return error_summary(e)
    if not _RAY_OOM.search(text):
        parts.append("a kernel OOM kill or a crash looks like this too: see the node's dmesg "
                     "and the worker's log in Ray's session logs")  # fmt: skip
    return "; ".join(parts)


def _ray_exceptions() -> Any:
    import ray.exceptions

    return ray.exceptions


def _committed(path: str) -> str:
    from bigntk.store import KernelStore

    try:
        return f"the {int(KernelStore.open(path).committed().sum())} committed blocks are kept"
    except Exception:  # the store may not even exist yet
        return "committed blocks are kept"


@contextlib.contextmanager
def store_full_errors(path: str) -> Iterator[None]:
    """Turn "no space left" failures inside the block into :class:`StoreFullError`."""
    try:
        yield
    except StoreFullError:
        raise
    except OSError as e:
        if e.errno not in _FULL:
            raise
        raise StoreFullError(
            e.errno,
            f"{path}: the store's disk is full ({e.strerror}); {_committed(path)}. Free space "
            "(or raise the quota) and run the same build again to resume.",
        ) from e
    except BlockFailedError as e:
        mark = next((m for m in _MARKS if m in str(e)), None)
        if mark is None:
            raise
        block = str(e).split(";", 1)[0]
        raise StoreFullError(
            errno.ENOSPC,
            f"{path}: the store's disk is full ({mark}; {block}); {_committed(path)}. Free "
            "space (or raise the quota) and run the same build again to resume.",
        ) from e
