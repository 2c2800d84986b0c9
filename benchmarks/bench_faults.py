"""Fault injection, every fault several times: do builds survive, and stay bit-exact?

Run from the repository root::

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_faults.py [--runs 5] [--seed 0]

Every build is the standard problem of ``tests/faults.py`` (symmetric NTK of
48 examples in blocks of 8: 21 blocks; the worker-raise fault uses the 48 x 8
rectangular one: 6 blocks), each driver a fresh process with its own local
Ray, exactly as ``bigntk build`` runs. Per fault and run:

- ``driver-kill``: SIGKILL of the driver's process group at a random moment
  of an uninterrupted build's duration, then the same build again;
- ``worker-kill``: SIGKILL of the worker process once a random number (0-15)
  of blocks is committed; the driver carries on by itself;
- ``worker-kill-start``: the same, as soon as the worker process exists
  (while it starts, before any block);
- ``worker-raise``: the model raises on block (3, 0) while a trigger file
  exists: the build must stop naming that block after its retries, keep what
  it committed, and resume once the trigger is gone;
- ``disk-full``: the store on a tmpfs too small for it (``unshare -rm``): the
  build must stop with a clear error, and resume once the tmpfs is enlarged;
- ``stale-partial``: orphan ``*.partial`` files planted in a finished store,
  then the same build again;
- ``truncated-chunk``: a random chunk file truncated at a random length, then
  ``verify --checksums`` and the build with ``repair=True``.

Counts: faults that landed (the build was still running, or the store was
damaged), builds completed after recovery, blocks recomputed (written before
the fault but not committed, re-queued after a worker died, or repaired),
kernels bit-identical to an uninterrupted build, and blocks lost (committed
but wrong, or missing at the end). The goal is 0 lost in every run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import faults  # noqa: E402


def _row(landed, result, recomputed, ref, path, note=""):
    ok = "error" not in result
    cmp = faults.compare(path, ref) if ok else {"identical": False, "lost": -1}
    return {
        "landed": landed,
        "completed": ok and cmp.get("complete", False),
        "recomputed": recomputed,
        "identical": cmp["identical"],
        "lost": cmp["lost"],
        "note": "; ".join(
            filter(None, [note, "" if ok else f"{result['error']}: {result.get('message')}"])
        ),
    }


def driver_kill(work, ref, rng, duration):
    path = work / "k.zarr"
    proc = faults.start_driver(str(path))
    when = rng.uniform(0.0, duration)
    time.sleep(when)
    landed = proc.poll() is None
    faults.kill_group(proc)
    recomputed = faults.written_uncommitted(path)
    result = faults.run_driver(str(path))
    return _row(landed, result, recomputed, ref, path, f"killed at {when:.1f}s")


def worker_kill(work, ref, rng, duration, after=None):
    path = work / "k.zarr"
    log = work / "driver.err"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", faults.DRIVER, str(path), "{}"],
            env=faults.driver_env(), cwd=faults.ROOT, stdout=subprocess.PIPE,
            stderr=err, text=True, start_new_session=True,
        )  # fmt: skip
        if after is None:  # a random moment: after this many blocks were committed
            after = rng.randint(0, 15)
        faults.wait_for(
            lambda: (
                proc.poll() is not None
                or (faults.committed(path) >= after and bool(faults.worker_pids(proc.pid)))
            ),
            300,
        )
        pids = faults.worker_pids(proc.pid)
        landed = bool(pids) and proc.poll() is None
        for pid in pids[:1]:
            os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    recomputed = log.read_text().count("A worker died while computing block")
    result = faults.parse_result(out)
    return _row(landed, result, recomputed, ref, path, f"killed after {after} commits")


def worker_kill_start(work, ref, rng, duration):
    return worker_kill(work, ref, rng, duration, after=0)


def worker_raise(work, ref_rect, rng, duration):
    path = work / "k.zarr"
    trigger = work / "fail-now"
    trigger.touch()
    first = faults.run_driver(str(path), shape="rect", trigger=str(trigger))
    named = "Block (3, 0) failed 3 times" in first.get("message", "")
    named &= "injected fault" in first.get("message", "")
    kept_ok = faults.compare(path, ref_rect)["lost"] == 0 if path.exists() else True
    recomputed = faults.written_uncommitted(path)
    trigger.unlink()
    result = faults.run_driver(str(path), shape="rect", trigger=str(trigger))
    note = f"error named the block: {named}; committed kept intact: {kept_ok}"
    row = _row(first.get("error") == "BlockFailedError", result, recomputed, ref_rect, path, note)
    row["completed"] &= named and kept_ok
    return row


def disk_full(work, ref, rng, duration):
    size = f"{rng.choice([64, 96, 128])}k"
    out = faults.run_disk_full(str(work), size=size, reference=str(ref))
    if "error" in out:
        note = out.get("message", "") + out.get("stderr", "")[-300:]
        return {"landed": False, "completed": False, "recomputed": 0, "identical": False,
                "lost": -1, "note": note}  # fmt: skip
    clear = out["first"].startswith("StoreFullError")
    return {
        "landed": out["first"] != "completed",
        "completed": out["complete"] and clear,
        "recomputed": out["written_uncommitted"],
        "identical": out["identical"],
        "lost": out["lost"],
        "note": f"tmpfs {size}: {out['committed_when_full']} committed when full; "
        f"{out['first'][:60]}",
    }


def stale_partial(work, ref, rng, duration):
    path = work / "k.zarr"
    shutil.copytree(ref, path)
    partials = faults.plant_partials(str(path), rng, count=rng.randint(1, 5))
    result = faults.run_driver(str(path))
    left = sum(p.exists() for p in partials)
    row = _row(True, result, result.get("computed", 0), ref, path, f"{len(partials)} planted")
    row["completed"] &= left == 0
    return row


def truncated_chunk(work, ref, rng, duration):
    from bigntk.store import KernelStore, scan

    path = work / "k.zarr"
    shutil.copytree(ref, path)
    victim = faults.truncate_random_chunk(str(path), rng)
    found = len(scan(KernelStore.open(str(path))).bad_blocks)
    result = faults.run_driver(str(path), repair=True)
    note = f"{victim.relative_to(path)} truncated; verify --checksums found {found} bad block(s)"
    return _row(found > 0, result, result.get("computed", 0), ref, path, note)


FAULTS = {
    "driver-kill": driver_kill,
    "worker-kill": worker_kill,
    "worker-kill-start": worker_kill_start,
    "worker-raise": worker_raise,
    "disk-full": disk_full,
    "stale-partial": stale_partial,
    "truncated-chunk": truncated_chunk,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=list(FAULTS), choices=list(FAULTS))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_faults_"))
    start = time.time()
    t0 = time.perf_counter()
    ref = work / "ref.zarr"
    assert "error" not in faults.run_driver(str(ref))
    duration = time.perf_counter() - t0
    ref_rect = work / "ref_rect.zarr"
    assert "error" not in faults.run_driver(str(ref_rect), shape="rect")
    from importlib.metadata import version

    versions = ", ".join(f"{m} {version(m)}" for m in ("jax", "ray", "zarr", "numpy"))
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(start))}, {platform.node()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}, {versions}; "
          f"uninterrupted build: {duration:.1f}s (driver start to exit), runs={args.runs}, "
          f"seed={args.seed}")  # fmt: skip
    if "disk-full" in args.only and not faults.can_mount_tmpfs():
        print("# disk-full: skipped (unshare -rm cannot mount a tmpfs here)")
        args.only.remove("disk-full")
    header = "| fault | runs | landed | builds completed | blocks recomputed | bit-identical |"
    print(header + " blocks lost |")
    print("|---|---|---|---|---|---|---|")
    details = []
    for name in args.only:
        rows = []
        for run in range(args.runs):
            run_dir = work / f"{name}-{run}"
            run_dir.mkdir()
            reference = ref_rect if name == "worker-raise" else ref
            row = FAULTS[name](run_dir, reference, rng, duration)
            rows.append(row)
            details.append(f"{name} #{run}: {json.dumps(row)}")
            shutil.rmtree(run_dir, ignore_errors=True)
        lost = [r["lost"] for r in rows]
        print(
            f"| {name} | {len(rows)} | {sum(r['landed'] for r in rows)} | "
            f"{sum(r['completed'] for r in rows)} | {sum(r['recomputed'] for r in rows)} | "
            f"{sum(r['identical'] for r in rows)} | {sum(x for x in lost if x > 0)}"
            f"{' (errors: ' + str(lost.count(-1)) + ')' if -1 in lost else ''} |",
            flush=True,
        )
    print()
    print("\n".join(details))
    print(f"# total {time.time() - start:.0f}s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
