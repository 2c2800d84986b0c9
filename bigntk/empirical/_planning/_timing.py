"""Timing and predicting the candidates of a kernel call (AUTO, the CPU path trial).

* :func:`time_runs` / :func:`time_repeated`: the minimum wall time of runs of a
  compiled program (repeated for fast programs, so that noise does not decide);
* :func:`stand_ins`: concrete arrays of traced shapes, for timing under a user's jit;
* :func:`predict`: seconds from XLA's cost analysis where nothing can run,
  :func:`calibrated` by the ratios earlier trials measured (:func:`calibrate`), kept
  in the process's :class:`~bigntk.empirical._planning._cache.PlanningCache`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import jax
import numpy as np

from bigntk.empirical._implementation import NtkImplementation
from bigntk.empirical._planning._cache import PlanningCache
from bigntk.empirical._trees import is_tracer

logger = logging.getLogger("bigntk.empirical.auto")

#: Rough device throughput (FLOP/s, bytes/s) for compile-only predictions.
_ROOFLINE = {"cpu": (5e10, 1e10), "gpu": (3e13, 2e12), "cuda": (3e13, 2e12), "tpu": (1e14, 1e12)}


def predict(compiled: Any, device: Any) -> float | None:
    """Seconds predicted from XLA's cost analysis (uncalibrated)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost:
        return None
    flops_s, bytes_s = _ROOFLINE.get(device.platform, _ROOFLINE["gpu"])
    return (
        float(cost.get("flops", 0.0)) / flops_s + float(cost.get("bytes accessed", 0.0)) / bytes_s
    )


def calibrated(cache: PlanningCache, t: float, device: Any, impl: NtkImplementation) -> float:
    """``t`` corrected by the ratios measured so far in ``cache.calibration``."""
    total, count = cache.calibration.get((device.device_kind, int(impl)), (0.0, 0))
    return t * math.exp(total / count) if count else t


def calibrate(
    cache: PlanningCache, measured: float, predicted: float | None, device: Any, impl: Any
) -> None:
    """Add ``measured / predicted`` seconds to ``cache.calibration``."""
    if predicted and measured > 0:
        key = (device.device_kind, int(impl))
        total, count = cache.calibration.get(key, (0.0, 0))
        cache.calibration[key] = (total + math.log(measured / predicted), count + 1)


def _stand_in(leaf: Any, rng: np.random.Generator) -> Any:
    """A concrete array with ``leaf``'s shape and dtype (tracers only; others as they are)."""
    if not is_tracer(leaf):
        return leaf
    a = jax.typeof(leaf)
    shape, dtype = tuple(a.shape), a.dtype
    if jax.numpy.issubdtype(dtype, jax.dtypes.prng_key):
        key = jax.random.key(0, impl=jax.random.key_impl(leaf))
        return jax.random.split(key, shape) if shape else key
    if jax.numpy.issubdtype(dtype, np.inexact):
        # values of order one: the times of float arithmetic do not depend on them
        return jax.numpy.asarray(rng.standard_normal(shape), dtype=dtype)
    return jax.numpy.zeros(shape, dtype)  # integers and booleans: zero is a valid index


def stand_ins(dynamic: Any) -> Any:
    """Concrete stand-ins for the traced leaves of ``dynamic`` (None: not possible)."""
    rng = np.random.default_rng(0)
    try:
        with jax.ensure_compile_time_eval():
            return jax.tree.map(lambda v: _stand_in(v, rng), dynamic)
    except Exception as e:  # noqa: BLE001 - an unusual dtype: AUTO predicts instead
        logger.debug("AUTO: no stand-in arrays for the traced arguments (%r).", e)
        return None


def time_runs(compiled: Any, dynamic: Any, runs: int) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(runs):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(dynamic))
        best = min(best, time.perf_counter() - start)
    return best, out


def time_repeated(compiled: Any, dynamic: Any, first: float) -> tuple[float, Any]:
    """The minimum of repeated runs: about 0.25 s in all for programs under 0.1 s, else one."""
    runs = 1 if first > 0.1 else min(8, max(2, int(0.25 / max(first, 1e-6))))
    return time_runs(compiled, dynamic, runs)
