"""The ``bigntk`` command line (also ``python -m bigntk``).

::

    bigntk build CONFIG.yaml [--set key.path=value ...] [--overwrite] [--no-progress]
                             [--repair] [--wait SECONDS]
    bigntk status STORE          # blocks done, kinds, shapes, last run's timings
    bigntk info STORE            # the stored build spec and versions, as YAML
    bigntk verify CONFIG.yaml [--blocks K] [--seed S] [--set ...]
    bigntk verify STORE --checksums   # reread every block: missing, damaged, NaN/inf
    bigntk plan CONFIG.yaml [--workers N] [--flops-per-s F] [--no-measure] [--set ...]
    bigntk submit CONFIG.yaml --address http://HEAD:8265 [--set ...] [--pip REQ | --no-pip]
                  [--env NAME[=VALUE]] [--wait]    # the build as a Ray job on a cluster

``verify`` needs the config (the store keeps fingerprints of the model and
data, not the model and data): it recomputes ``K`` random committed blocks in
this process, compares them with the stored ones, and checks symmetry and
positive semi-definiteness where they apply.

Exit status: 0 success; 1 a failure (a block failed, a check failed); 2 bad
input (arguments, config, paths). Errors are one line, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import yaml

from bigntk.errors import (
    BuildInputError,
    ConfigError,
    IncompleteKernelError,
    NotAStoreError,
    SpecMismatchError,
)

# errors of the user's input: exit status 2
_INPUT_ERRORS = (
    ConfigError,
    BuildInputError,
    SpecMismatchError,
    NotAStoreError,
    IncompleteKernelError,
    FileNotFoundError,
)
_PSD_ROWS = 32  # rows drawn from each block of a sampled principal submatrix


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bigntk`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error (already printed)
        return int(e.code or 0)
    logging.basicConfig(level=logging.WARNING, format="bigntk: %(message)s")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("bigntk: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    except _INPUT_ERRORS as e:
        _print_error(e)
        return 2
    except Exception as e:
        _print_error(e)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bigntk", description="Build and inspect finite-width NTK/NNGP kernel stores."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def overrides(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config field, e.g. --set tiling.block_size=128 (value read as YAML)",
        )

    build = commands.add_parser("build", help="build (or resume) the kernel a config describes")
    build.add_argument("config", help="YAML build config")
    overrides(build)
    build.add_argument("--overwrite", action="store_true", help="replace a store of another spec")
    build.add_argument(
        "--repair",
        action="store_true",
        help="reread committed blocks first; recompute those missing, damaged or non-finite",
    )
    build.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another build holding the store (default: refuse at once)",
    )
    build.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    build.set_defaults(run=_build)

    status = commands.add_parser("status", help="progress, shapes and timings of a store")
    status.add_argument("path", help="kernel store")
    status.set_defaults(run=_status)

    info = commands.add_parser("info", help="the stored build spec and versions, as YAML")
    info.add_argument("path", help="kernel store")
    info.set_defaults(run=_info)

    verify = commands.add_parser(
        "verify", help="recompute sampled blocks of a config's store and check them"
    )
    verify.add_argument("config", help="the YAML build config the store was built from")
    verify.add_argument("--blocks", type=int, default=3, help="blocks to recompute (default 3)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the block sample")
    verify.add_argument(
        "--checksums",
        action="store_true",
        help="reread every committed block of the store (CONFIG may be the store's path) and "
        "report those missing, unreadable, differing from their checksum or holding NaN/inf",
    )
    overrides(verify)
    verify.set_defaults(run=_verify)

    plan = commands.add_parser(
        "plan", help="blocks, bytes on disk, per-block cost and device-hours of a config's build"
    )
    plan.add_argument("config", help="YAML build config")
    overrides(plan)
    plan.add_argument("--workers", type=int, default=None, help="workers for the wall time")
    plan.add_argument(
        "--flops-per-s",
        type=float,
        default=None,
        help="throughput of the target device (e.g. 5e13): per-block time from XLA's FLOPs",
    )
    plan.add_argument(
        "--no-measure", dest="measure", action="store_false", help="do not time a block here"
    )
    plan.set_defaults(run=_plan)

    submit = commands.add_parser(
        "submit", help="run a config's build on a Ray cluster as a Ray job (resumes if re-run)"
    )
    submit.add_argument("config", help="YAML build config")
    submit.add_argument(
        "--address",
        default=os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS"),
        help="the cluster's job API, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, "
        "$RAY_ADDRESS)",
    )
    overrides(submit)
    submit.add_argument("--overwrite", action="store_true", help="replace a store of another spec")
    submit.add_argument(
        "--pip",
        action="append",
        default=None,
        metavar="REQUIREMENT",
        help="pip requirement installed for the job (repeatable; default bigntk==<this version> "
        "with the extras the store needs, e.g. 'bigntk @ git+https://...')",
    )
    submit.add_argument(
        "--no-pip", action="store_true", help="install nothing: the cluster already has bigntk"
    )
    submit.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="environment variable for the job and its workers (NAME alone: its value here)",
    )
    submit.add_argument(
        "--wait", action="store_true", help="follow the job's logs; exit with its status"
    )
    submit.set_defaults(run=_submit)
    return parser


def _print_error(e: BaseException) -> None:
    lines = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    message = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1].strip()}"
    print(f"bigntk: error: {message}", file=sys.stderr)


# --- commands ------------------------------------------------------------------------------


def _build(args: argparse.Namespace) -> int:
    from bigntk.build import build_kernel, load_config

    overrides = [*args.set, *(["output.overwrite=true"] if args.overwrite else [])]
    config = load_config(args.config, overrides)
    x1, x2 = config.load_data()
    f, params = config.load_model(x1.shape[1:])
    result = build_kernel(f, params, x1, x2, progress=args.progress, repair=args.repair,
                          lease_wait=args.wait, **config.build_kwargs())  # fmt: skip
    if not (args.progress and sys.stderr.isatty()):  # else the driver wrote it below its bar
        print(result.summary())
    return 0


def _status(args: argparse.Namespace) -> int:
    from bigntk.build import KernelStore

    store = KernelStore.open(args.path)
    plan = store.plan
    done = int((plan.mask() & store.committed()).sum())
    total = plan.num_blocks
    state = "complete" if done == total else "incomplete: run the same build again to resume"
    shape = "diagonal" if plan.diagonal else "symmetric" if plan.symmetric else "rectangular"
    print(f"{store.path}: {done}/{total} blocks ({100 * done / total:.1f}%), {state}")
    print(f"  kernel: {plan.n1} x {plan.n2}, {shape}; block size {plan.block}, grid {plan.grid}")
    from bigntk.build._lease import describe, holder

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
    from bigntk.build import KernelStore

    store = KernelStore.open(args.path)
    meta = store.meta
    doc = {
        "path": store.path,
        "format": meta.get("format"),
        "spec_hash": meta.get("spec_hash"),
        "spec": meta.get("spec"),
        "versions": meta.get("versions"),
    }
    print(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None), end="")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from bigntk.build import load_config
    from bigntk.build._estimate import estimate

    config = load_config(args.config, args.set)
    result = estimate(
        config, workers=args.workers, flops_per_s=args.flops_per_s, measure=args.measure
    )
    print(f"bigntk plan: {args.config} -> {config.path}")
    for line in result.lines():
        print(f"  {line}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from bigntk.build import _submit as jobs

    if not args.address:
        raise ConfigError(
            "bigntk submit needs the cluster's job API: --address http://HEAD:8265 "
            "(or set RAY_API_SERVER_ADDRESS)."
        )
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep and name not in os.environ:
            raise ConfigError(f"--env {name}: no such variable here; give --env {name}=VALUE.")
        env[name] = value if sep else os.environ[name]
    overrides = [*args.set, *(["output.overwrite=true"] if args.overwrite else [])]
    pip = [] if args.no_pip else args.pip
    submission = jobs.submit(args.config, args.address, overrides, pip=pip, env=env)
    return jobs.wait(submission) if args.wait else 0


def _verify(args: argparse.Namespace) -> int:
    from bigntk.build import KernelStore, load_config

    if args.checksums:  # a store path, or the config of one
        from bigntk.build._checksum import report, scan

        path = args.config
        if path.endswith((".yaml", ".yml")):
            path = load_config(path, args.set).path
        store = KernelStore.open(path)
        result = scan(store)
        print("\n".join(report(store, result)))
        return 1 if result.problems else 0
    if args.blocks < 1:
        raise ConfigError(f"--blocks must be a positive int, got {args.blocks}.")
    config = load_config(args.config, args.set)
    store = KernelStore.open(config.path)
    x1, x2 = config.load_data()
    f, params = config.load_model(x1.shape[1:])
    done = store.plan.mask() & store.committed()
    print(
        f"bigntk verify: {store.path} ({int(done.sum())}/{store.plan.num_blocks} blocks "
        f"committed; checking {min(args.blocks, int(done.sum()))})"
    )
    checks = verify_store(store, f, params, x1, x2, config.kernel, args.blocks, args.seed)
    for name, ok, detail in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")
    failed = sum(not ok for _, ok, _ in checks)
    print(f"{'FAIL' if failed else 'PASS'}: {len(checks) - failed} of {len(checks)} checks passed")
    return 1 if failed else 0


# --- verification --------------------------------------------------------------------------


def verify_store(
    store: Any, f: Any, params: Any, x1: Any, x2: Any, kernel: dict, blocks: int, seed: int
) -> list[tuple[str, bool, str]]:
    """Checks of a store against its model and data: ``[(name, passed, detail)]``.

    1. the store's spec holds this config's settings and fingerprints;
    2. ``blocks`` random committed blocks, recomputed here, match the stored
       ones (``allclose``, rtol 1e-5 for float32, 1e-9 for float64);
    3. symmetric builds: each sampled block equals its stored mirror;
    4. square kernels: a principal submatrix (rows of the sampled block's row
       and column blocks; output axes traced) is positive semi-definite
       (eigenvalues ``>= -1e-4 * max |eigenvalue|``).
    """
    from bigntk.build._driver import _impl_int
    from bigntk.build._spec import fingerprint_model

    spec, plan = store.spec, store.plan
    expected = {
        "kinds": list(kernel["kinds"]),
        "trace_axes": repr(kernel["trace_axes"]),
        "diagonal_axes": repr(kernel["diagonal_axes"]),
        "vmap_axes": repr(kernel["vmap_axes"]),
        "implementation": _impl_int(kernel["implementation"]),
        "model": fingerprint_model(f, params, {}),
        "x1": x1.fingerprint(),
        "x2": None if x2 is None else x2.fingerprint(),
    }
    differ = [k for k, v in expected.items() if spec.get(k) != v]
    if differ:
        detail = f"the store was built from another config; differs in: {', '.join(differ)}"
        return [("config matches the store", False, detail)]
    checks = [("config matches the store", True, "settings, model and data fingerprints")]
    done = plan.mask() & store.committed()
    committed = np.argwhere(done)
    if not len(committed):
        return [*checks, ("committed blocks", False, "none to check; run the build first")]
    rng = np.random.default_rng(seed)
    sample = committed[np.sort(rng.choice(len(committed), min(blocks, len(committed)), False))]
    compute = _block_kernel(f, params, kernel, plan)
    square = not plan.diagonal and (plan.symmetric or spec["x1"] == spec["x2"])
    for bi, bj in map(tuple, sample.tolist()):
        checks += _check_values(store, compute, x1, x2, bi, bj)
        if plan.symmetric:
            checks.append(_check_mirror(store, bi, bj))
        if square:
            checks += _check_psd(store, done, bi, bj, rng)
    return checks


def _tolerance(dtype: Any) -> float:
    return {8: 1e-9, 4: 1e-5}.get(np.dtype(dtype).itemsize, 1e-2)


def _block_kernel(f, params, kernel: dict, plan) -> Any:
    """The build's block program on one local device: an independent recomputation."""
    import jax

    from bigntk.build._compute import BlockKernel

    return BlockKernel(f, params, block=plan.block, diagonal=plan.diagonal,
                       devices=jax.local_devices()[:1], **kernel)  # fmt: skip


def _check_values(store, compute, x1, x2, bi: int, bj: int) -> list[tuple[str, bool, str]]:
    plan = store.plan
    (r0, r1), (c0, c1) = plan.rows(bi), plan.cols(bj)
    if x2 is None and bi == bj:  # a diagonal block of K(x, x), computed as the workers do
        values = compute(x1.read(r0, r1))
    else:
        values = compute(x1.read(r0, r1), (x1 if x2 is None else x2).read(c0, c1))
    out = []
    for kind, want in values.items():
        if plan.symmetric and bi == bj:
            want = store.symmetrize(want)
        arr = store.array(kind)
        got = arr[r0:r1] if plan.diagonal else arr[r0:r1, c0:c1]
        scale = float(np.abs(want).max()) or 1.0
        diff = float(np.abs(got.astype(np.float64) - want).max())
        rtol = _tolerance(arr.dtype)
        ok = bool(np.allclose(got, want, rtol=rtol, atol=rtol * scale))
        detail = f"max abs diff {diff:.2e}, max rel diff {diff / scale:.2e} (rtol {rtol:g})"
        out.append((f"block ({bi}, {bj}) {kind} recomputed", ok, detail))
    return out


def _check_mirror(store, bi: int, bj: int) -> tuple[str, bool, str]:
    from bigntk.build._store import mirror_permutation

    (r0, r1), (c0, c1) = store.plan.rows(bi), store.plan.cols(bj)
    perm = mirror_permutation(store.dims)
    worst, ok = 0.0, True
    for kind in store.kinds:
        arr = store.array(kind)
        block = arr[r0:r1, c0:c1]
        mirror = np.transpose(arr[c0:c1, r0:r1], perm)
        scale = float(np.nanmax(np.abs(block), initial=0.0)) or 1.0
        rtol = _tolerance(arr.dtype)
        worst = max(worst, float(np.abs(block.astype(np.float64) - mirror).max()))
        ok &= bool(np.allclose(block, mirror, rtol=rtol, atol=rtol * scale))
    return f"block ({bi}, {bj}) equals its mirror ({bj}, {bi})", ok, f"max diff {worst:.2e}"


def _check_psd(store, done, bi: int, bj: int, rng) -> list[tuple[str, bool, str]]:
    plan = store.plan

    def committed(i: int, j: int) -> bool:
        return bool(done[min(i, j), max(i, j)] if plan.symmetric else done[i, j])

    if not all(committed(i, j) for i in (bi, bj) for j in (bi, bj)):
        return []
    rows = set()
    for b in {bi, bj}:
        r0, r1 = plan.rows(b)
        size = min(r1 - r0, _PSD_ROWS * (2 if bi == bj else 1))
        rows.update(rng.choice(np.arange(r0, r1), size, replace=False).tolist())
    idx = np.array(sorted(rows))
    out = []
    for kind in store.kinds:
        sub = _traced(np.asarray(store.array(kind).oindex[idx, idx], np.float64), store.dims)
        eig = np.linalg.eigvalsh((sub + sub.T) / 2)
        top = float(np.abs(eig).max())
        ok = bool(np.isfinite(eig).all() and eig.min() >= -1e-4 * top)
        detail = f"{len(idx)} rows: min eigenvalue {eig.min():.3e}, max {eig.max():.3e}"
        out.append((f"blocks ({bi}, {bj}) {kind} principal submatrix is PSD", ok, detail))
    return out


def _traced(sub: np.ndarray, dims: list[str]) -> np.ndarray:
    """``(m, m, *out) -> (m, m)``: trace paired output axes, sum the others."""
    letters, names = "ab", {}
    for dim in dims[2:]:
        base = dim.removesuffix("_1").removesuffix("_2")
        names.setdefault(base, "cdefghijklmnopqrstuvwxyz"[len(names)])
        letters += names[base]
    return np.einsum(f"{letters}->ab", sub)
