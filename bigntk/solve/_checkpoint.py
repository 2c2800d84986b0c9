"""Checkpoints of a CG solve, so a killed driver continues where it stopped.

A checkpoint is one ``.npz`` file holding a :class:`~bigntk.solve._cg.CGState`,
named after a hash of everything that defines the problem (the kernel, the
regulariser, the preconditioner, the targets, the tolerance): a different
problem never picks up another's iterate. Files are written to
``<name>.<pid>.partial`` and renamed over the old one, so a kill mid-write leaves
the previous checkpoint. For a solve on a store the default folder is
``<store>/solve/`` (plain files beside the Zarr arrays, not a Zarr node).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from bigntk.solve._cg import CGState
from bigntk.solve._distributed import store_folder
from bigntk.solve._operator import is_dask
from bigntk.store import KernelStore

logger = logging.getLogger(__name__)

_ARRAYS = ("x", "r", "p", "rz", "active", "residual")


def kernel_identity(kernel) -> str:
    """A string naming the kernel's contents: the store's spec hash and kind for a store,
    the Dask graph name for a Dask array, a hash of the bytes for an in-memory array."""
    if hasattr(kernel, "spec_hash"):
        return f"store:{kernel.spec_hash}:{kernel.kind}"
    if is_dask(kernel):
        return f"dask:{kernel.name}"
    array = np.ascontiguousarray(kernel)
    return f"array:{hashlib.sha256(array.view(np.uint8)).hexdigest()}"


def problem_key(identity: str, y: np.ndarray, **settings) -> str:
    """A short hash of the problem: kernel identity, targets and solver settings."""
    digest = hashlib.sha256(json.dumps([identity, settings], sort_keys=True).encode())
    digest.update(np.ascontiguousarray(y, dtype=np.float64).view(np.uint8))
    return digest.hexdigest()[:20]


class Checkpoint:
    """Saves a CG state to ``folder/cg-<key>.npz`` every ``every`` iterations.

    Args:
        folder: where checkpoints live (created on the first save).
        key: the :func:`problem_key`.
        every: iterations between saves.
    """

    def __init__(self, folder: str | os.PathLike, key: str, every: int = 5):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint_every must be a positive int, got {every!r} instead.")
        self.file = Path(folder) / f"cg-{key}.npz"
        self.every = every
        self.saves = 0

    def load(self, shape: tuple[int, ...]) -> CGState | None:
        """The saved state for this problem, or None (none saved, or unreadable)."""
        if not self.file.exists():
            return None
        try:
            with np.load(self.file) as saved:
                state = CGState(*(saved[name] for name in _ARRAYS),
                                iterations=int(saved["iterations"]),
                                history=[float(h) for h in saved["history"]])  # fmt: skip
        except (OSError, ValueError, KeyError) as e:
            logger.warning("ignoring the unreadable checkpoint %s (%s)", self.file, e)
            return None
        if state.x.shape != tuple(shape):
            logger.warning("ignoring the checkpoint %s: shape %s, expected %s", self.file,
                           state.x.shape, shape)  # fmt: skip
            return None
        logger.info("resuming the solve from %s at iteration %d", self.file, state.iterations)
        return state

    def save(self, state: CGState) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.file.with_name(f"{self.file.name}.{os.getpid()}.partial")
        with open(partial, "wb") as handle:
            np.savez(handle, **{name: getattr(state, name) for name in _ARRAYS},
                     iterations=state.iterations, history=np.asarray(state.history))  # fmt: skip
        os.replace(partial, self.file)
        self.saves += 1

    def __call__(self, state: CGState) -> None:
        """Save when ``state.iterations`` is a multiple of ``every``."""
        if state.iterations % self.every == 0:
            self.save(state)


def for_fit(checkpoint, kernel, op, kind: str, y: np.ndarray, every: int,
            **settings) -> Checkpoint | None:  # fmt: skip
    """The checkpoint of a ``fit``: ``checkpoint`` False: none; None: ``<store>/solve/``
    when ``kernel`` is a local store (path or distributed), else none; a path: that folder."""
    if checkpoint is False:
        return None
    if checkpoint is None or checkpoint is True:
        folder = store_folder(kernel)
        if folder is None:
            if checkpoint is True:
                raise ValueError(
                    "checkpoint=True needs a local kernel store as the kernel; for an array "
                    "pass checkpoint='some/folder'."
                )
            return None
        folder = os.path.join(folder, "solve")
    else:
        folder = os.fspath(checkpoint)
    if hasattr(op, "spec_hash"):
        identity = kernel_identity(op)
    elif isinstance(kernel, str | os.PathLike):
        identity = f"store:{KernelStore.open(str(kernel)).spec_hash}:{kind}"
    else:
        identity = kernel_identity(op.kernel)
    return Checkpoint(folder, problem_key(identity, y, **settings), every)
