"""Trials: running compiled candidates on a call's arguments to find the fastest.

:func:`fastest` times AUTO's candidates (fastest predicted first; the minimum
of repeated runs where candidates are compared; a candidate predicted
:data:`SKIP_SLOWER` times slower than the best is not run), then
:func:`on_faster_path` times the winner on the other XLA:CPU path where that is
worth it, and records the outcome for later processes (``_records``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from bigntk.empirical._planning import _cpu_path as cpu_path
from bigntk.empirical._planning import _records as records
from bigntk.empirical._planning import _timing as timing
from bigntk.empirical._planning._cache import PlanningCache
from bigntk.empirical._planning._candidates import Candidate

logger = logging.getLogger("bigntk.empirical.auto")

SKIP_SLOWER = 20.0  # a candidate predicted this much slower than the best is not timed
SWITCH = 0.9  # AUTO leaves the rule's CPU path for one at least 10% faster


class Timed(NamedTuple):
    """A candidate's measured seconds and the output of its run."""

    seconds: float
    candidate: Candidate
    out: Any


def fastest(
    fitted: list[Candidate],
    predicted: dict,
    dynamic: Any,
    device: Any,
    cache: PlanningCache,
    trial_wanted: Callable[[], bool],
) -> tuple[Timed, dict[str, float]]:
    """``(winner, seconds)``: the fastest of ``fitted`` run on ``dynamic``, each one's time.

    Args:
        fitted: the candidates.
        predicted: calibrated predicted seconds by implementation.
        dynamic: the traced leaves of the call (or their stand-ins).
        device: where they run.
        cache: the process's planning state (measured times calibrate predictions).
        trial_wanted: whether a program is timed on the other CPU path.
    """
    order = sorted(fitted, key=lambda c: predicted[c.impl])
    best_predicted = predicted[order[0].impl]
    seconds: dict[str, float] = {}
    best: Timed | None = None
    low, high = cpu_path.TRIAL_S
    for c in order:
        if best is not None and predicted[c.impl] > SKIP_SLOWER * best_predicted:
            continue
        first, out = timing.time_runs(c.exe, dynamic, 1)
        t = first
        # one candidate with no CPU path to compare: its one run is the answer
        compared = len(order) > 1 or (
            not c.recorded
            and trial_wanted()
            and bool(cpu_path.other_paths(device.platform, c.path))
            and low <= t <= high
        )
        if compared and (best is None or first < 3 * best.seconds):
            again, out = timing.time_repeated(c.exe, dynamic, first)
            t = min(first, again)
        seconds[c.impl.name] = t
        timing.calibrate(cache, t, c.predicted, device, c.impl)
        if best is None or t < best.seconds:
            best = Timed(t, c, out)
    return on_faster_path(best, dynamic, seconds, device, trial_wanted), seconds


def on_faster_path(
    best: Timed, dynamic: Any, seconds: dict, device: Any, trial_wanted: Callable[[], bool]
) -> Timed:
    """``best``'s program on the faster CPU path (its time added to ``seconds``).

    The other path is compiled and timed only when ``best`` ran within
    ``cpu_path.TRIAL_S`` (shorter runs gain too little, longer ones would cost
    too much to time twice), and only where ``trial_wanted()`` (AUTO, or
    ``BIGNTK_CPU_PATH_TRIAL=1``); never when its path was recorded. The outcome
    is recorded for later processes.
    """
    t, c, out = best
    if c.recorded or not trial_wanted():
        return best
    low, high = cpu_path.TRIAL_S
    timed = {c.path: t}
    for other in cpu_path.other_paths(device.platform, c.path):
        if not low <= t <= high:
            break
        run = _run_on_path(c, other, dynamic)
        if run is None:
            continue
        exe, t2, out2 = run
        seconds[f"{c.impl.name}/{other}"] = timed[other] = t2
        if t2 < SWITCH * t:  # clearly faster: noise does not flip the path
            c, t, out = c._replace(exe=exe, path=other), t2, out2
    if len(timed) > 1:
        records.put("cpu-path", c.text, device, {"path": c.path, "seconds": timed})
    return Timed(t, c, out)


def _run_on_path(c: Candidate, path: str, dynamic: Any) -> tuple | None:
    """``(executable, seconds, output)`` of ``c``'s program compiled for ``path`` (None: failed)."""
    try:
        exe = cpu_path.compile_lowered(c.lowered, path)
        # a new executable's first run is cold: time it apart, as the first path's
        first, out = timing.time_runs(exe, dynamic, 1)
        again, out = timing.time_repeated(exe, dynamic, first)
    except Exception as e:  # noqa: BLE001 - the first path works: keep it
        logger.debug("%s on CPU path %s failed: %r", c.impl.name, path, e)
        return None
    return exe, min(first, again), out
