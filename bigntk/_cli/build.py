"""``bigntk build``, ``plan`` and ``submit``: run, cost or submit a config's build."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from bigntk._cli import add_overrides
from bigntk.errors import ConfigError


def add_build(commands: Any) -> None:
    """``bigntk build CONFIG``: build (or resume) the kernel a config describes."""
    build = _config_command(
        commands, "build", "build (or resume) the kernel a config describes", _build
    )
    add_overrides(build)
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


def add_plan(commands: Any) -> None:
    """``bigntk plan CONFIG``: the build's blocks, bytes, per-block cost and device-hours."""
    plan = _config_command(
        commands,
        "plan",
        "blocks, bytes on disk, per-block cost and device-hours of a config's build",
        _plan,
    )
    add_overrides(plan)
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


def add_submit(commands: Any) -> None:
    """``bigntk submit CONFIG``: the build as a Ray job on a cluster."""
    submit = _config_command(
        commands,
        "submit",
        "run a config's build on a Ray cluster as a Ray job (resumes if re-run)",
        _submit,
    )
    submit.add_argument(
        "--address",
        default=os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS"),
        help="the cluster's job API, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, "
        "$RAY_ADDRESS)",
    )
    add_overrides(submit)
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


def _config_command(
    commands: Any, name: str, help: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """The parser of a command whose first argument is a YAML build config."""
    parser = commands.add_parser(name, help=help)
    parser.add_argument("config", help="YAML build config")
    parser.set_defaults(run=run)
    return parser


def _build(args: argparse.Namespace) -> int:
    from bigntk.build import build_kernel
    from bigntk.config import load_config

    overrides = [*args.set, *(["output.overwrite=true"] if args.overwrite else [])]
    config = load_config(args.config, overrides)
    x1, x2 = config.load_data()
    f, params = config.load_model(x1.shape[1:])
    result = build_kernel(f, params, x1, x2, progress=args.progress, repair=args.repair,
                          lease_wait=args.wait, **config.build_kwargs())  # fmt: skip
    if not (args.progress and sys.stderr.isatty()):  # else the driver wrote it below its bar
        print(result.summary())
    return 0


def _plan(args: argparse.Namespace) -> int:
    from bigntk.config import estimate, load_config

    config = load_config(args.config, args.set)
    result = estimate(
        config, workers=args.workers, flops_per_s=args.flops_per_s, measure=args.measure
    )
    print(f"bigntk plan: {args.config} -> {config.path}")
    for line in result.lines():
        print(f"  {line}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from bigntk import config as jobs

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
    print("\n".join(submission.summary()), flush=True)
    return jobs.wait(submission) if args.wait else 0
