"""What planning remembers for the whole process, in one object: :func:`process_cache`.

Everything else planning keeps belongs to one kernel function and lives in its
:class:`~bigntk.empirical._planning._planner.Planner` (its compiled programs,
decisions and executables), so it is freed with the function. What outlives a
kernel function is only what the process learns about its JAX and machine:

* ``calibration``: how far XLA's cost-analysis predictions were from measured
  times, per device kind and implementation (``_timing.calibrate``);
* ``refused_options``: the compiler options the installed XLA refused once, so
  that they are never passed again (``_cpu_path.compile_with_options``).

Measured decisions that later processes reuse are kept on disk instead
(``_records``, ``BIGNTK_CACHE_DIR``).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class PlanningCache:
    """The process-wide state of planning (see the module docstring).

    Attributes:
        calibration: ``(device kind, int(implementation)) -> (sum, count)`` of
            ``log(measured / predicted)`` seconds.
        refused_options: names of the compiler options XLA refused in this process.
    """

    calibration: dict[tuple[str, int], tuple[float, int]] = dataclasses.field(default_factory=dict)
    refused_options: set[str] = dataclasses.field(default_factory=set)


_PROCESS = PlanningCache()


def process_cache() -> PlanningCache:
    """The one :class:`PlanningCache` of this process (tests may reset its fields)."""
    return _PROCESS
