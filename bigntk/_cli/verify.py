"""``bigntk verify STORE | CONFIG``: check a store, and with its config recompute sampled entries.

``STORE`` (a path or URL that is not a ``.yaml``/``.yml`` file) gets every
check the store alone allows; ``CONFIG`` also gets the config compared with
the store's fingerprints and sampled entries recomputed by another method
than the build's (see :mod:`bigntk.build._verify`). ``--checksums`` rereads
every block and nothing else.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from bigntk._cli import add_overrides
from bigntk.errors import ConfigError

_METHODS = ("reference", "jacobian_contraction", "ntk_vector_products", "structured_derivatives")


def add_verify(commands: Any) -> None:
    """``bigntk verify STORE | CONFIG``."""
    verify = commands.add_parser(
        "verify",
        help="check a store (checksums, NaN/inf, symmetry, PSD); with its config also "
        "recompute sampled entries by another method",
    )
    verify.add_argument(
        "config",
        metavar="STORE|CONFIG",
        help="a kernel store, or the YAML build config (.yaml/.yml) it was built from",
    )
    verify.add_argument(
        "--blocks", type=int, default=3, help="blocks sampled for PSD and recomputation (default 3)"
    )
    verify.add_argument(
        "--rows", type=int, default=4, help="rows and columns recomputed per block (default 4)"
    )
    verify.add_argument("--seed", type=int, default=0, help="seed of the samples")
    verify.add_argument(
        "--implementation",
        choices=_METHODS,
        default=None,
        help="CONFIG: how to recompute; default 'reference' (float64 jax.jacobian + "
        "tensordot), or another implementation where its Jacobians would exceed 2 GiB. "
        "Never the store's own implementation",
    )
    verify.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="largest accepted error of a recomputed entry, relative to the sample's largest "
        "entry (default 1e-4 for float32 stores, 1e-10 for float64)",
    )
    verify.add_argument(
        "--checksums",
        action="store_true",
        help="only reread every committed block of the store (CONFIG may be the store's path) "
        "and report those missing, unreadable, differing from their checksum or holding NaN/inf",
    )
    add_overrides(verify)
    verify.set_defaults(run=_verify)


def _is_config(target: str) -> bool:
    return target.endswith((".yaml", ".yml")) or os.path.isfile(target)


def _check_arguments(args: argparse.Namespace) -> None:
    for name in ("blocks", "rows"):
        value = getattr(args, name)
        if value < 1:
            raise ConfigError(f"--{name} must be a positive int, got {value}.")
    if args.tolerance is not None and not args.tolerance > 0:
        raise ConfigError(f"--tolerance must be a positive number, got {args.tolerance}.")


def _verify(args: argparse.Namespace) -> int:
    from bigntk.build import verify as checks_of
    from bigntk.config import load_config
    from bigntk.store import KernelStore

    _check_arguments(args)
    config = load_config(args.config, args.set) if _is_config(args.config) else None
    if config is None and (args.set or args.implementation or args.tolerance is not None):
        given = (
            "--set" if args.set else "--implementation" if args.implementation else "--tolerance"
        )
        raise ConfigError(
            f"{given} needs the build config: bigntk verify CONFIG.yaml {given} ...; "
            f"{args.config} is a store, which holds no model or data to recompute with."
        )
    store = KernelStore.open(args.config if config is None else config.path)
    if args.checksums:
        from bigntk.store import report, scan

        result = scan(store)
        print("\n".join(report(store, result)))
        return 1 if result.problems else 0
    done = int(checks_of.committed_blocks(store).sum())
    checks, good = checks_of.check_store(store, args.blocks, args.seed)
    header = f"bigntk verify: {store.path} ({done}/{store.plan.num_blocks} blocks committed)"
    if config is None:
        header += "; store checks only (give the build config to also recompute entries)"
    else:
        x1, x2 = config.load_data()
        f, params = config.load_model(x1.shape[1:])
        match = checks_of.check_config(
            store, f, params, x1, x2, config.kernel, config.data_fingerprint
        )
        checks.insert(0, match)
        if match.ok:
            try:
                method = checks_of.choose_method(
                    store, args.implementation, f, params, x1.read(0, 1), args.rows
                )
            except ValueError as e:
                raise ConfigError(str(e)) from None
            recorded = checks_of.recorded_implementation(store)
            header += (
                f"; recomputing entries of {min(args.blocks, int(good.sum()))} blocks by "
                f"{checks_of.describe(method)} (the store was built by "
                f"{recorded.name if recorded is not None else 'AUTO'})"
            )
            checks += checks_of.recompute(
                store, f, params, x1, x2, config.kernel, good, method=method,
                blocks=args.blocks, rows=args.rows, seed=args.seed, tolerance=args.tolerance,
            )  # fmt: skip
    print(header)
    for check in checks:
        print(f"  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    failed = sum(not c.ok for c in checks)
    print(f"{'FAIL' if failed else 'PASS'}: {len(checks) - failed} of {len(checks)} checks passed")
    return 1 if failed else 0
