"""The subcommands of ``bigntk``, one module per group; :mod:`bigntk.cli` is the entry point.

Each ``add_<command>(commands)`` adds the command's parser to ``commands``
(argparse's subparsers) with ``run`` set to a function of the parsed
arguments that returns the exit status.
"""

from __future__ import annotations

import argparse


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """The repeatable ``--set KEY=VALUE`` option of the commands that read a config."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set tiling.block_size=128 (value read as YAML)",
    )
