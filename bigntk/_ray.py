"""Connecting to Ray, the same way for builds and distributed solves."""

from __future__ import annotations

import logging
import time
import warnings


def start_ray(address: str | None) -> tuple[bool, float]:
    """Connect to Ray; ``address=None`` starts a new local Ray unless one runs in this process.

    Returns:
        ``(started, seconds)``: whether this call started (and so owns) the connection,
        and how long that took.
    """
    import ray

    if ray.is_initialized():
        return False, 0.0
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Ray starts its daemons with fork+exec; JAX warns about any fork once it runs,
        # but an immediate exec shares no JAX state.
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        if address is None:
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    return True, time.perf_counter() - start
