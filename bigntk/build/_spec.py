"""What identifies a build: settings, layout and fingerprints of the computation and data.

Two runs with the same spec compute the same values, so the second resumes the
first's store; two runs whose values could differ have different specs. The
spec is canonical: equal computations spelled differently (``trace_axes=-1``,
``[-1]`` or ``(1,)`` for outputs of rank 2; ``kinds`` in any order) are one
spec. The model enters through :mod:`bigntk.build._identity` (its program and
parameter values), the data through a hash of every row
(:meth:`bigntk.build._data.Source.scan`).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from bigntk.empirical import axes_spec
from bigntk.errors import BuildInputError

KINDS = ("nngp", "ntk")
SPEC_VERSION = 2  # 1: model fingerprint by name and bytecode, data by 64 sampled rows


def canonical_vmap_axes(vmap_axes: Any) -> str:
    """A stable text of resolved batch axes (NT's forms: an int, a pytree, a 3-tuple)."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): plain(v[k]) for k in sorted(v, key=str)}
        if isinstance(v, list | tuple):
            return [plain(e) for e in v]
        if isinstance(v, np.integer):
            return int(v)
        return v

    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        in_axes, out_axes, kw = vmap_axes
    else:
        in_axes = out_axes = vmap_axes
        kw = {}
    return repr(plain([in_axes, out_axes, kw or {}]))


def canonical_kinds(kinds: Any) -> tuple[str, ...]:
    """``kinds`` as a tuple in the order of :data:`KINDS` (the order given changes nothing)."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds or len(set(kinds)) != len(kinds):
        raise BuildInputError(
            f"kinds must be a non-empty selection of {KINDS} without repeats, got {kinds!r} "
            "instead; e.g. kinds=('ntk',) or kinds=('nngp', 'ntk')."
        )
    return tuple(k for k in KINDS if k in kinds)


def output_axes(out_ndim: int, trace_axes: Any, diagonal_axes: Any) -> Any:
    """The canonical axes (an ``AxesSpec``: sorted, non-negative) for outputs of ``out_ndim``.

    Raises :class:`BuildInputError` for axes that do not fit, or a traced batch axis.
    """
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
    return spec


def dim_names(spec: Any) -> list[str]:
    """The stored arrays' dimension names for canonical axes ``spec``."""
    dims = []
    for k, side in spec.result_labels():
        if k == 0:
            dims.append("x" if side == 0 else f"x{side}")
        else:
            dims.append(f"out{k}" if side == 0 else f"out{k}_{side}")
    return dims


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
