"""The memory budget: how much a kernel call may allocate, and chunk sizes that respect it.

The budget bounds what one call allocates beyond its arguments: XLA's
``temp_size + output_size`` of the compiled program (the arguments are already
in memory when it starts). The default is a safe fraction of the device's free
memory: on GPU/TPU from ``device.memory_stats()``, on CPU from the available
RAM (``/proc/meminfo``, the cgroup limit and the address-space limit when set).

:func:`fit_chunks` finds chunk sizes by compiling: it reads the peak of the
unchunked program, then shrinks one knob at a time (examples of x1, examples
of x2, output basis vectors, parameters per group), predicting the next size
from a straight line through the last two compiled points, until the peak fits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from bigntk._text import format_bytes
from bigntk.empirical._chunking import Chunks
from bigntk.errors import MemoryBudgetError

logger = logging.getLogger(__name__)

#: Fraction of free device memory a call may use by default.
DEFAULT_FRACTION_ACCELERATOR = 0.75
DEFAULT_FRACTION_CPU = 0.5


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cgroup_available() -> int | None:
    """Room left under a cgroup v2 memory limit, None without one."""
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as fh:
            return int(limit) - int(fh.read().strip())
    except (OSError, ValueError):
        return None


def _address_space_room() -> int | None:
    """Room left under this process's address-space limit (``ulimit -v``), None without one."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return soft - int(line.split()[1]) * 1024
    except (ImportError, OSError, ValueError):
        return None
    return None


def free_memory(device: Any = None) -> int | None:
    """Free bytes on ``device`` (default: the default device), None if unknown."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit") or stats.get("bytes_reservable_limit")
        if limit:
            return int(limit) - int(stats.get("bytes_in_use", 0))
        return None
    known = [
        v
        for v in (_meminfo_available(), _cgroup_available(), _address_space_room())
        if v is not None
    ]
    if not known:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return min(known)


def default_budget(device: Any = None) -> int | None:
    """A safe fraction of the device's free memory, in bytes (None if unknown)."""
    device = device or jax.devices()[0]
    free = free_memory(device)
    if free is None:
        return None
    fraction = DEFAULT_FRACTION_CPU if device.platform == "cpu" else DEFAULT_FRACTION_ACCELERATOR
    return int(max(free, 0) * fraction)


def check_budget(memory_budget: Any) -> None:
    """Raise a clear error for a budget that is not None or a positive number of bytes."""
    if memory_budget is None:
        return
    ok = isinstance(memory_budget, int | float) and not isinstance(memory_budget, bool)
    if not ok or not memory_budget > 0:
        raise ValueError(
            f"memory_budget must be None (a safe fraction of free device memory) or a positive "
            f"number of bytes, e.g. memory_budget=2e9, got {memory_budget!r} instead."
        )


def peak_bytes(compiled: Any) -> int | None:
    """What a compiled program allocates beyond its arguments (None if XLA does not say)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if m is None:
        return None
    if isinstance(m, list | tuple):
        m = m[0] if m else None
    return int(m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)


class Knob(NamedTuple):
    """One way of cutting: the :class:`Chunks` field, its smallest and its full size."""

    name: str
    lo: int
    hi: int


def _set(chunks: Chunks, knob: Knob, value: int) -> Chunks:
    return dataclasses.replace(chunks, **{knob.name: None if value >= knob.hi else value})


def _next(points: list[tuple[int, int]], budget: int, lo: int) -> int:
    """The largest size the line through the last two ``(size, peak)`` points puts under budget."""
    (s0, p0), (s1, p1) = points[-2], points[-1]
    if s0 == s1 or p0 == p1:
        return max(lo, s1 // 2)
    slope = (p0 - p1) / (s0 - s1)
    if slope <= 0:
        return max(lo, s1 // 2)
    guess = int(s1 + (0.95 * budget - p1) / slope)
    return max(lo, min(guess, s1 - 1))


def fit_chunks(
    peak: Callable[[Chunks], int | None], knobs: list[Knob], budget: int, what: str
) -> tuple[Chunks, int | None]:
    """Chunks whose compiled peak is at most ``budget`` (see the module docstring).

    Args:
        peak: compiled peak bytes of the program cut by a :class:`Chunks`.
        knobs: the ways of cutting, in the order to try them.
        budget: bytes.
        what: the computation, for the error message.

    Returns:
        ``(chunks, peak)``.

    Raises:
        MemoryBudgetError: even the smallest pieces need more than ``budget``.
    """
    chunks = Chunks()
    p = peak(chunks)
    if p is None or p <= budget:
        return chunks, p
    for knob in knobs:
        if knob.hi <= knob.lo:
            continue
        before_chunks, before = chunks, p
        points = [(knob.hi, p)]
        size = max(knob.lo, min(knob.hi - 1, int(knob.hi * budget / p * 0.9)))
        while True:
            chunks = _set(chunks, knob, size)
            p = peak(chunks)
            points.append((size, p))
            logger.debug(
                "%s with %s: peak %d bytes (budget %d)", what, chunks.describe(), p, budget
            )
            if p is None or p <= budget or size == knob.lo:
                break
            size = _next(points, budget, knob.lo)
        if p is None:  # XLA stopped reporting a peak: keep the cut it was asked for
            return chunks, p
        if p <= budget:
            return _grow(peak, chunks, knob, points, budget)
        if p >= before:  # this knob does not help here (e.g. reverse-mode cotangents): undo it
            chunks, p = before_chunks, before
    raise MemoryBudgetError(
        f"{what} needs at least {p:,} bytes ({format_bytes(p)}) even cut into the smallest pieces "
        f"tried ({chunks.describe()}), but memory_budget is {budget:,} bytes "
        f"({format_bytes(budget)}). Pass memory_budget={p} or more, implementation=AUTO (which "
        "considers every implementation), or vmap_axes (if f treats examples independently) "
        "so that examples can be computed apart."
    )


def _grow(
    peak: Callable[[Chunks], int | None],
    chunks: Chunks,
    knob: Knob,
    points: list[tuple[int, int]],
    budget: int,
) -> tuple[Chunks, int]:
    """One step back up when the fitting size is well below what the line allows."""
    size, p = points[-1]
    under = [pt for pt in points if pt[1] <= budget]
    over = [pt for pt in points if pt[1] > budget]
    if not over or len(points) < 2:
        return chunks, p
    s_over = min(s for s, _ in over)
    guess = _next([max(under), min(over)], budget, knob.lo)
    if size < guess < s_over and guess > 1.5 * size:
        bigger = _set(chunks, knob, guess)
        p2 = peak(bigger)
        if p2 <= budget:
            return bigger, p2
    return chunks, p
