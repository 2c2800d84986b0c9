"""The CPU an idle Ray driver uses: the floor under any build's driver share.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_ray_idle.py [SECONDS]

Starts a local Ray as the builder's benchmarks do, waits 10 s, then sleeps
``SECONDS`` (default 60) and prints this process's CPU time over that span
(``time.process_time()``, all threads) as a share of one core, and the CPU by
thread name (Linux ``/proc``, 10 ms ticks).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import ray


def by_thread() -> dict[str, float]:
    named = {str(t.native_id): t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = named.get(tid, f.read().strip())
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def main() -> None:
    span = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    try:
        time.sleep(10)
        before, cpu = by_thread(), time.process_time()
        time.sleep(span)
        after, cpu = by_thread(), time.process_time() - cpu
    finally:
        ray.shutdown()
    print(f"idle Ray driver: {cpu:.3f} s CPU in {span:.0f} s = {100 * cpu / span:.2f}% of a core")
    delta = {k: round(v - before.get(k, 0.0), 2) for k, v in after.items()}
    print({k: v for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0})


if __name__ == "__main__":
    main()
