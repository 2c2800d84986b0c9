"""``bigntk verify STORE | CONFIG``: check a store, and with its config recompute sampled entries.

``STORE`` (a path or URL that is not a ``.yaml``/``.yml`` file) gets every
check the store alone allows; ``CONFIG`` also gets the config compared with
the store's fingerprints and sampled entries recomputed by another method
than the build's (:func:`bigntk.build.verify_store`). ``--checksums`` rereads
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
    from bigntk.build import verify_store
    from bigntk.config import load_config

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
    if args.checksums:
        return _checksums(args.config if config is None else config.path)
    report = verify_store(
        args.config if config is None else config, blocks=args.blocks, rows=args.rows,
        seed=args.seed, method=args.implementation, tolerance=args.tolerance,
    )  # fmt: skip
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _checksums(path: str) -> int:
    """``--checksums``: reread every committed block, report what is damaged."""
    from bigntk.store import KernelStore, report, scan

    store = KernelStore.open(path)
    result = scan(store)
    print("\n".join(report(store, result)))
    return 1 if result.problems else 0
