"""One writer per store: a lease object ``manifest/bigntk.lease`` inside the store.

The lease is a small JSON document: the holder's host, pid (and the pid's
start time, so a reused pid is not mistaken for the holder), when it started,
its last heartbeat, its time-to-live and a random token. The driver

1. creates it if absent (an atomic create-if-absent where the store has one:
   ``os.link`` on a local path; elsewhere write, then read back and compare
   the token), and refuses, or waits, while another live driver holds it;
2. takes over a lease whose holder is dead: the same host and its pid gone,
   or a heartbeat older than the lease's time-to-live (any host);
3. renews the heartbeat from a background thread every ``ttl / 4`` seconds,
   in a separate object ``manifest/bigntk.lease.beat-TOKEN``: the lease
   object itself is only ever created (create-if-absent) and deleted, never
   rewritten, so a heartbeat can never write our lease back over one that
   another driver just took over;
4. checks, before each manifest commit, that the lease object in the store
   still carries its token (:meth:`StoreLease.check` reads it), so a driver
   whose lease was taken over stops, however late its heartbeat thread runs;
5. deletes it at the end of the build, also on error.

Everything goes through Zarr's store interface (``StorePath``), so the same
code serves a local path and an fsspec object store. Clocks of the hosts that
share a store are assumed to agree to well within the time-to-live.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

from bigntk.errors import LeaseLostError, StoreLockedError
from bigntk.store._layout import BEAT_PREFIX, LEASE_KEY

logger = logging.getLogger(__name__)

DEFAULT_TTL_S = float(os.environ.get("BIGNTK_LEASE_TTL_S", 60.0))
_POLL_S = 0.5


def _sync(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


def _buffer(data: bytes) -> Any:
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype().buffer.from_bytes(data)


def _pid_start(pid: int) -> float | None:
    """The pid's start time (seconds since the epoch), None if no such process; -1: unknown."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with Ray's usual installs
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return -1.0
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped: dead
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # pragma: no cover - alive, owned by someone else
        return -1.0


def describe(lease: dict) -> str:
    """``host pid 1234, started 2026-01-01 10:00:00 UTC, last heartbeat 3s ago``."""
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(lease.get("started", 0)))
    age = time.time() - float(lease.get("heartbeat", 0))
    return (
        f"host {lease.get('host')} pid {lease.get('pid')}, started {started}, "
        f"last heartbeat {age:.0f}s ago"
    )


def stale_reason(lease: dict, now: float | None = None) -> str | None:
    """Why ``lease``'s holder is dead, or None if it may be alive."""
    now = time.time() if now is None else now
    age = now - float(lease.get("heartbeat", 0))
    if age > float(lease.get("ttl", DEFAULT_TTL_S)):
        return f"its last heartbeat is {age:.0f}s old (time-to-live {lease.get('ttl')}s)"
    if lease.get("host") == socket.gethostname():
        pid = int(lease.get("pid", -1))
        start = _pid_start(pid)
        if start is None:
            return f"its process {pid} is gone"
        recorded = lease.get("pid_start")
        if recorded is not None and start >= 0 and abs(start - float(recorded)) > 1.0:
            return f"its pid {pid} now belongs to another process"
    return None


class StoreLease:
    """The writer lease of one store (see the module docstring).

    Args:
        store_path: a ``zarr.storage.StorePath`` of the store's root (a group's
            ``store_path``).
        where: the store's path or URL, for messages.
        ttl: seconds after the last heartbeat at which other drivers may take over.
    """

    def __init__(self, store_path: Any, where: str, ttl: float = DEFAULT_TTL_S):
        self._store_path = store_path
        self._key = store_path / LEASE_KEY
        self.where = where
        self.ttl = float(ttl)
        self.token: str | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- reading and writing the lease object ---------------------------------------------

    def _beat_key(self, token: str) -> Any:
        return self._store_path / (BEAT_PREFIX + str(token))

    @staticmethod
    def _get_json(key: Any) -> Any:
        """The JSON document at ``key``; None if absent; ``ValueError`` if unreadable."""
        from zarr.core.buffer import default_buffer_prototype

        raw = _sync(key.get(prototype=default_buffer_prototype()))
        return None if raw is None else json.loads(raw.to_bytes())

    def read(self, with_beat: bool = True) -> dict | None:
        """The current lease document (its ``heartbeat`` the latest one), or None if none.

        An unreadable lease reads as a stale one. ``with_beat=False`` skips reading the
        holder's heartbeat object (its token is in the document: enough to see a takeover).
        """
        try:
            doc = self._get_json(self._key)
        except ValueError:  # a torn write by a non-atomic store: treat as stale
            return {"token": None, "heartbeat": 0, "ttl": 0, "raw": True}
        if doc is None:
            return None
        if not isinstance(doc, dict):
            return {"token": None, "heartbeat": 0, "ttl": 0}
        if with_beat and doc.get("token"):
            try:
                beat = self._get_json(self._beat_key(doc["token"]))
            except ValueError:  # torn: the lease's own time stands
                beat = None
            if isinstance(beat, dict) and beat.get("token") == doc["token"]:
                doc["heartbeat"] = max(float(doc.get("heartbeat", 0)), float(beat["heartbeat"]))
        return doc

    def _new_doc(self) -> dict:
        now = time.time()
        pid = os.getpid()
        return {
            "host": socket.gethostname(),
            "pid": pid,
            "pid_start": _pid_start(pid),
            "started": now,
            "heartbeat": now,
            "ttl": self.ttl,
            "token": secrets.token_hex(8),
        }

    def _try_create(self) -> bool:
        doc = self._new_doc()
        _sync(self._key.set_if_not_exists(_buffer(json.dumps(doc).encode())))
        current = self.read()  # read back: create-if-absent is not atomic on every store
        if current is None or current.get("token") != doc["token"]:
            return False
        self.token, self.lost = doc["token"], None
        return True

    # --- the lease's life -----------------------------------------------------------------

    def acquire(self, wait: float | None = 0.0) -> None:
        """Take the lease, waiting up to ``wait`` seconds (None: forever) for a live holder.

        Raises:
            StoreLockedError: another live driver still holds it after ``wait``.
        """
        if self.token is not None:
            return self.ensure()
        deadline = None if wait is None else time.monotonic() + max(0.0, wait)
        announced = False
        while True:
            if self._try_create():
                break
            current = self.read()
            if current is not None:
                reason = stale_reason(current)
                if reason is not None:
                    self._take_over(current, reason)
                    continue
                if deadline is not None and time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"{self.where} is being written by another bigntk build "
                        f"({describe(current)}). Wait for it to finish, or stop it; if it "
                        "died, its lease expires "
                        f"{current.get('ttl')}s after its last heartbeat (or at once on its own "
                        "host). Pass lease_wait=SECONDS (bigntk build --wait SECONDS) to wait."
                    )
                if not announced:
                    logger.warning("Waiting for %s: held by %s.", self.where, describe(current))
                    announced = True
            time.sleep(_POLL_S)
        self._start_heartbeat()

    def _take_over(self, stale: dict, reason: str) -> None:
        # compare before deleting, so that we never delete a lease a faster driver just took
        if self.read() == stale:
            logger.warning(
                "Taking over the lease of %s from %s: %s.", self.where, describe(stale), reason
            )
            _sync(self._key.delete())
            if stale.get("token"):
                _sync(self._beat_key(stale["token"]).delete())

    def ensure(self) -> None:
        """Recreate our lease if the store was recreated under it (``overwrite``)."""
        current = self.read()
        if current is None:
            self.token = None
            self.acquire(0.0)
        elif current.get("token") != self.token:
            self._lose(current)
            self.check()

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if another driver took the lease over.

        Reads the lease object, so a takeover is seen before the next commit even
        if the heartbeat thread has not run since.
        """
        if self.lost is None and self.token is not None:
            with self._lock:
                current = self.read(with_beat=False)
                if current is None or current.get("token") != self.token:
                    self._lose(current)
        if self.lost is not None:
            raise LeaseLostError(
                f"{self.where}: this build lost its writer lease ({self.lost}); it stopped "
                "writing. Another driver now owns the store; its committed blocks are kept."
            )

    def _lose(self, current: dict | None) -> None:
        held_by = "deleted" if current is None else f"now held by {describe(current)}"
        self.lost = f"the lease was {held_by}"
        logger.error("%s: lost the writer lease: %s.", self.where, self.lost)

    def heartbeat(self) -> None:
        """Renew the lease now (the background thread calls this every ``ttl / 4`` s)."""
        with self._lock:
            if self.token is None or self.lost is not None:
                return
            current = self.read()
            if current is None or current.get("token") != self.token:
                self._lose(current)
                return
            beat = {"token": self.token, "heartbeat": time.time()}
            _sync(self._beat_key(self.token).set(_buffer(json.dumps(beat).encode())))

    def _start_heartbeat(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(self.ttl / 4):
                try:
                    self.heartbeat()
                except Exception as e:  # a transient store error: try again next time
                    logger.warning("%s: lease heartbeat failed: %s", self.where, e)

        self._thread = threading.Thread(target=beat, name="bigntk-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self.token is None:
                return
            try:
                current = self.read()
                if current is not None and current.get("token") == self.token:
                    _sync(self._key.delete())
                _sync(self._beat_key(self.token).delete())
            except Exception as e:  # never mask the build's own error
                logger.warning("%s: could not release the writer lease: %s", self.where, e)
            self.token = None
