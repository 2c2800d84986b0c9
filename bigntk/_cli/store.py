"""``bigntk status`` and ``info``: what a kernel store holds."""

from __future__ import annotations

import argparse
from typing import Any

import yaml


def add_status(commands: Any) -> None:
    """``bigntk status STORE``: blocks done, kinds, shapes, the last run's timings."""
    status = commands.add_parser("status", help="progress, shapes and timings of a store")
    status.add_argument("path", help="kernel store")
    status.set_defaults(run=_status)


def add_info(commands: Any) -> None:
    """``bigntk info STORE``: the stored build spec and versions, as YAML."""
    info = commands.add_parser("info", help="the stored build spec and versions, as YAML")
    info.add_argument("path", help="kernel store")
    info.set_defaults(run=_info)


def _status(args: argparse.Namespace) -> int:
    from bigntk.store import KernelStore

    store = KernelStore.open(args.path)
    plan = store.plan
    done = int((plan.mask() & store.committed()).sum())
    total = plan.num_blocks
    state = "complete" if done == total else "incomplete: run the same build again to resume"
    shape = "diagonal" if plan.diagonal else "symmetric" if plan.symmetric else "rectangular"
    print(f"{store.path}: {done}/{total} blocks ({100 * done / total:.1f}%), {state}")
    print(f"  kernel: {plan.n1} x {plan.n2}, {shape}; block size {plan.block}, grid {plan.grid}")
    from bigntk.store import describe_lease as describe
    from bigntk.store import lease_holder as holder

    lease = holder(args.path)
    if lease is not None:
        print(f"  being written by: {describe(lease)}")
    for kind in store.kinds:
        arr = store.array(kind)
        print(f"  {kind}: shape {tuple(arr.shape)} {arr.dtype}, dims ({', '.join(store.dims)})")
    timings = store.meta.get("timings") or {}
    if "last_run_s" not in timings:
        print("  last run: no timings recorded")
        return 0
    workers = timings.get("workers") or ([timings["worker"]] if "worker" in timings else [])
    line = f"  last run: {timings['last_run_s']:.1f}s"
    if "workers_start_s" in timings:
        line += f" (workers ready after {timings['workers_start_s']:.1f}s)"
    print(line)
    for w in workers:
        print(
            f"  worker: {w.get('host')} pid {w.get('pid')}, {w.get('platform')} "
            f"{w.get('device_kind')} x{w.get('devices')}, setup {w.get('setup_s', 0):.1f}s"
        )
    return 0


def _info(args: argparse.Namespace) -> int:
    from bigntk.store import KernelStore

    store = KernelStore.open(args.path)
    meta = store.meta
    doc = {
        "path": store.path,
        "format": meta.get("format"),
        "spec_hash": meta.get("spec_hash"),
        "spec": meta.get("spec"),
        "versions": meta.get("versions"),
    }
    if "probe" in meta:
        values = meta["probe"]["values"]
        doc["probe"] = {
            k: f"{len(v)} entries ({meta['probe']['dtype']})" for k, v in values.items()
        }
    if meta.get("version_changes"):
        doc["version_changes"] = meta["version_changes"]
    print(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None), end="")
    return 0
