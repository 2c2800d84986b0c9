"""What identifies a build: settings, layout and fingerprints of the model and data.

Two runs with the same spec write the same store, so the second resumes the
first. Fingerprints are cheap: parameters are hashed whole, inputs by shape,
dtype and a sample of rows (a full hash of a shared-storage dataset would make
every resume read it all).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from bigntk.empirical._axes import axes_spec
from bigntk.errors import BuildInputError

KINDS = ("nngp", "ntk")


def fingerprint_model(f: Callable, params: Any, kwargs: dict) -> str:
    """Hash of ``f``'s name and code, the parameter tree and values, and the kwargs."""
    h = hashlib.sha256()
    code = getattr(f, "__code__", None)
    h.update(getattr(f, "__qualname__", type(f).__name__).encode())
    if code is not None:
        h.update(code.co_code)
    leaves, treedef = jax.tree.flatten((params, kwargs))
    h.update(str(treedef).encode())
    for leaf in leaves:
        if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
            a = np.asarray(leaf)
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(repr(leaf).encode())
    return h.hexdigest()[:16]


def canonical_kinds(kinds: Any) -> tuple[str, ...]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds or len(set(kinds)) != len(kinds):
        raise BuildInputError(
            f"kinds must be a non-empty selection of {KINDS} without repeats, got {kinds!r} "
            "instead; e.g. kinds=('ntk',) or kinds=('nngp', 'ntk')."
        )
    return kinds


def output_axes(out_ndim: int, trace_axes: Any, diagonal_axes: Any) -> tuple[bool, list[str]]:
    """``(diagonal, dims)``: whether the batch axis is diagonal, and the stored dim names."""
    try:
        spec = axes_spec(out_ndim, trace_axes, diagonal_axes)
    except (TypeError, ValueError) as e:
        raise BuildInputError(str(e)) from None
    if out_ndim == 0 or 0 in spec.trace:
        raise BuildInputError(
            "A kernel build needs outputs with a batch axis (axis 0) that is not traced: "
            f"got trace_axes={trace_axes!r} for outputs of rank {out_ndim}. Remove 0 from "
            "trace_axes (a traced batch axis averages the whole kernel into one number)."
        )
    dims = []
    for k, side in spec.result_labels():
        if k == 0:
            dims.append("x" if side == 0 else f"x{side}")
        else:
            dims.append(f"out{k}" if side == 0 else f"out{k}_{side}")
    return 0 in spec.diagonal, dims


def default_block_size(n: int, entry_bytes: int, devices: int, per_example_cost: int) -> int:
    """A block size from the memory a block needs and the machine's memory.

    ``per_example_cost`` estimates the bytes held per example while computing
    (e.g. a Jacobian row: outputs × parameters × itemsize); blocks use at most
    a quarter of physical memory for it and 256 MiB for their output.
    """
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # pragma: no cover
        memory = 8 * 2**30
    by_compute = (memory // 4) // max(1, 2 * per_example_cost)
    by_output = int(math.isqrt(max(1, (256 * 2**20) // max(1, entry_bytes))))
    block = max(1, min(2048, by_compute, by_output, n))
    return max(devices, block // devices * devices)
