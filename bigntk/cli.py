"""The ``bigntk`` command line (also ``python -m bigntk``).

::

    bigntk build CONFIG.yaml [--set key.path=value ...] [--overwrite] [--no-progress]
                             [--repair] [--wait SECONDS]
    bigntk status STORE          # blocks done, kinds, shapes, last run's timings
    bigntk info STORE            # the stored build spec and versions, as YAML
    bigntk verify STORE          # checksums, NaN/inf, exact symmetry, PSD of sampled blocks
    bigntk verify CONFIG.yaml [--blocks K] [--rows R] [--seed S] [--implementation M]
                              [--tolerance T] [--set ...]  # and recompute sampled entries
    bigntk verify STORE --checksums   # reread every block: missing, damaged, NaN/inf
    bigntk plan CONFIG.yaml [--workers N] [--flops-per-s F] [--no-measure] [--set ...]
    bigntk submit CONFIG.yaml --address http://HEAD:8265 [--set ...] [--pip REQ | --no-pip]
                  [--env NAME[=VALUE]] [--wait]    # the build as a Ray job on a cluster
    bigntk solve CONFIG.yaml [--targets y.npy] [--test-kernel STORE] [--diag-reg R]
                 [--preconditioner nystrom|jacobi|none] [--address A] [--dask]
    bigntk spectrum STORE [-k K] [--address A] [--dask]   # top-k eigenpairs

``verify STORE`` runs every check the store alone allows. ``verify CONFIG``
also needs the model and data (the store keeps only their fingerprints): it
recomputes sampled entries of ``K`` random committed blocks in this process by
another method than the build's (the float64 reference by default) and
compares them within a tolerance.

Exit status: 0 success; 1 a failure (a block failed, a check failed); 2 bad
input (arguments, config, paths). Errors are one line, without a traceback.

The commands themselves live in :mod:`bigntk._cli`: ``build``, ``plan`` and
``submit`` in ``build.py``, ``status`` and ``info`` in ``store.py``, ``verify`` in
``verify.py``, ``solve`` and ``spectrum`` in ``solve.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bigntk._cli.build import add_build, add_plan, add_submit
from bigntk._cli.solve import add_solve, add_spectrum
from bigntk._cli.store import add_info, add_status
from bigntk._cli.verify import add_verify
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
    add_build(commands)
    add_status(commands)
    add_info(commands)
    add_verify(commands)
    add_plan(commands)
    add_submit(commands)
    add_solve(commands)
    add_spectrum(commands)
    return parser


def _print_error(e: BaseException) -> None:
    """One line per error; a config's problems each on their own line (they are all fixes)."""
    lines = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    if isinstance(e, ConfigError):
        print("\n".join(f"bigntk: error: {line.strip()}" for line in lines), file=sys.stderr)
        return
    message = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1].strip()}"
    print(f"bigntk: error: {message}", file=sys.stderr)
