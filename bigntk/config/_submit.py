"""``bigntk submit``: run a build on a Ray cluster as a Ray job.

The config is read, overridden (``--set``) and checked here, its relative
paths made absolute (as ``bigntk build`` would resolve them), and
``ray.address`` set to ``auto`` so that the job's driver joins the cluster
instead of starting a Ray of its own. It travels in the job's ``working_dir``
as ``bigntk_job.yaml``, next to the entry point's module when that module is
a file or package in the current directory. The job runs::

    sh bigntk_job.sh    # python -m bigntk build bigntk_job.yaml --no-progress

where ``bigntk_job.sh`` picks the Python that has bigntk: the job's own (a
``pip`` runtime env puts it first on PATH), else the interpreter the cluster's
Ray runs on (read from the job supervisor's process), so a cluster started as
``.venv/bin/ray start`` without activating the venv needs nothing on PATH.

with a ``runtime_env`` that pip-installs bigntk (``pip``; empty to use what
the cluster's image has) and forwards the filesystem variables the store and
inputs need (``AWS_*`` for ``s3://``, ...) plus any ``env`` given. The store
must be on storage every node sees: a shared path or an object-store URL.

Clusters with token authentication (``RAY_AUTH_MODE=token``, Ray's default for
new clusters when a token exists): the token is read as Ray's own clients read it
(``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token``) and sent with every request to the job API, also when
``RAY_AUTH_MODE`` is not set in this shell; ``RAY_AUTH_MODE=disabled`` sends none.

Submitting the same config again resumes the build (the builder skips the
committed blocks); while a job for the same store is still pending or running,
a second submission is refused.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import importlib.metadata
import importlib.util
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import yaml

from bigntk.config._load import read_config
from bigntk.errors import JobSubmitError
from bigntk.store import forwarded_env, is_url, protocol

logger = logging.getLogger(__name__)

JOB_CONFIG = "bigntk_job.yaml"
JOB_SCRIPT = "bigntk_job.sh"
# Runs the build with a Python that has bigntk, without relying on `bigntk` being on PATH.
_LAUNCHER = """# written by bigntk submit: run the build with a Python that has bigntk
has_bigntk() {  # bigntk and what a build needs are importable
    "$1" -c 'import importlib.util as u, sys
sys.exit(not all(u.find_spec(m) for m in ("bigntk", "jax", "ray", "zarr")))' 2>/dev/null
}
py=""
for cand in python3 python; do  # the job's own environment (a pip runtime env) comes first
    cand=$(command -v "$cand") && has_bigntk "$cand" && { py=$cand; break; }
done
pid=$PPID  # else the interpreter of the Ray process that started this job (its ray/_raylet.so)
while [ -z "$py" ] && [ -r "/proc/$pid/maps" ] && [ "$pid" -gt 1 ]; do
    raylet=$(grep -o '/[^ ]*/site-packages/ray/_raylet[^ ]*[.]so' "/proc/$pid/maps" | head -n 1)
    if [ -n "$raylet" ]; then
        prefix=${raylet%/lib/python*}
        for cand in "$prefix/bin/python3" "$prefix/bin/python" "$(readlink "/proc/$pid/exe")"; do
            has_bigntk "$cand" && { py=$cand; break; }
        done
        break
    fi
    pid=$(awk '{print $4}' "/proc/$pid/stat")
done
if [ -z "$py" ]; then
    echo "bigntk_job.sh: no Python with bigntk found on this node (PATH: $PATH)." >&2
    echo "Install bigntk in the cluster's environment, or submit without --no-pip." >&2
    exit 2
fi
exec "$py" -m bigntk build __CONFIG__ --no-progress
"""
_ACTIVE = ("PENDING", "RUNNING")
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


@dataclasses.dataclass(frozen=True)
class Submission:
    """A submitted build job.

    Attributes:
        job_id: Ray's submission id.
        address: the cluster's job API (``http://HEAD:8265``).
        store: the store the job builds.
        entrypoint: the job's shell command.
        runtime_env: the job's runtime environment (``working_dir`` as uploaded).
    """

    job_id: str
    address: str
    store: str
    entrypoint: str
    runtime_env: dict

    def summary(self) -> list[str]:
        """What ``bigntk submit`` prints: the job, where it builds, how to follow it."""
        lines = [f"bigntk submit: job {self.job_id} on {self.address} builds {self.store}"]
        if not is_url(self.store):
            lines.append(f"  (a path: every node must see {self.store} at this same path)")
        return lines + [f"  {line}" for line in self.how_to_follow()]

    def how_to_follow(self) -> list[str]:
        return [
            f"follow:  ray job logs -f --address {self.address} {self.job_id}",
            f"state:   ray job status --address {self.address} {self.job_id}",
            f"store:   bigntk status {self.store}",
            f"stop:    ray job stop --address {self.address} {self.job_id}",
        ]


def default_pip(paths: Sequence[str] = ()) -> list[str]:
    """``bigntk==<this version>``, with the extras the URLs in ``paths`` need."""
    extras = sorted({_EXTRAS[protocol(p)] for p in paths if protocol(p) in _EXTRAS})
    version = importlib.metadata.version("bigntk")
    return [f"bigntk{'[' + ','.join(extras) + ']' if extras else ''}=={version}"]


def job_config(config: str | os.PathLike, overrides: Sequence[str] = ()) -> tuple[dict, Any]:
    """The raw config the job will run, and the validated config, read here.

    Raises:
        ConfigError: the config is invalid (checked here, before submitting).
    """
    raw, parsed = read_config(config, overrides)
    raw = copy.deepcopy(raw)
    for name in ("x1", "x2"):  # the absolute paths `bigntk build` would use here
        if isinstance(raw["data"].get(name), str):
            raw["data"][name] = getattr(parsed, name)
    raw["output"]["path"] = parsed.path
    raw["ray"] = {**(raw.get("ray") or {}), "address": "auto"}
    return raw, parsed


def submit(
    config: str | os.PathLike,
    address: str,
    overrides: Sequence[str] = (),
    *,
    pip: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Submission:
    """Submit the build a config describes to the Ray cluster at ``address``.

    Args:
        config: the YAML build config.
        address: the cluster's job API, ``http://HEAD:8265``.
        overrides: ``key.path=value`` overrides, as ``--set``.
        pip: pip requirements installed for the job; None: :func:`default_pip`;
            empty: install nothing (the cluster's image has bigntk).
        env: more environment variables for the job and its workers.

    Returns:
        The :class:`Submission`.

    Raises:
        ConfigError: the config is invalid.
        JobSubmitError: a job for the same store is still pending or running.
    """
    raw, parsed = job_config(config, overrides)
    store = parsed.path
    client = job_client(address)
    for job in client.list_jobs():
        if (job.metadata or {}).get("bigntk_store") == store and str(job.status) in _ACTIVE:
            raise JobSubmitError(
                f"Job {job.submission_id} is already building {store} ({job.status}). Follow it "
                f"with `ray job logs -f --address {address} {job.submission_id}`, or stop it "
                f"with `ray job stop --address {address} {job.submission_id}` first."
            )
    urls = [p for p in (store, parsed.x1, parsed.x2) if isinstance(p, str)]
    pip = default_pip(urls) if pip is None else list(pip)
    env_vars = {**forwarded_env(urls), **dict(env or {})}
    entrypoint = f"sh {JOB_SCRIPT}"
    staging = pathlib.Path(tempfile.mkdtemp(prefix="bigntk-job-"))
    try:
        (staging / JOB_CONFIG).write_text(yaml.safe_dump(raw, sort_keys=False))
        (staging / JOB_SCRIPT).write_text(_LAUNCHER.replace("__CONFIG__", JOB_CONFIG))
        if "entry_point" in parsed.model:
            _copy_local_module(parsed.model["name"], staging)
        runtime_env: dict[str, Any] = {"working_dir": str(staging), "env_vars": env_vars}
        if pip:
            runtime_env["pip"] = {"packages": pip, "pip_check": False}
        name = pathlib.Path(str(config)).stem
        job_id = client.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env,
            submission_id=f"bigntk-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
            metadata={"bigntk_store": store, "bigntk_config": os.path.abspath(str(config))},
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shown_env = {k: "..." for k in env_vars}
    submission = Submission(
        job_id, address, store, entrypoint, {**runtime_env, "env_vars": shown_env}
    )
    logger.info("submitted job %s on %s, building %s", job_id, address, store)
    return submission


def auth_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The Ray cluster token this shell would use, found as Ray's clients find it.

    ``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``, else
    ``~/.ray/auth_token``; None when ``RAY_AUTH_MODE=disabled`` or no token exists.
    """
    environ = os.environ if environ is None else environ
    if environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    if environ.get("RAY_AUTH_TOKEN", "").strip():
        return environ["RAY_AUTH_TOKEN"].strip()
    path = environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(
        environ.get("HOME", os.path.expanduser("~")), ".ray", "auth_token"
    )
    try:
        token = pathlib.Path(path).read_text().strip()
    except OSError:
        return None
    return token or None


def job_client(address: str) -> Any:
    """A ``JobSubmissionClient`` for ``address`` that authenticates with the cluster's token.

    Ray's job SDK sends the token only when ``RAY_AUTH_MODE=token`` is set in this
    process; a cluster started with a token (``ray start`` finds ``~/.ray/auth_token``)
    then refuses a shell without it. The header is sent whenever a token is found.
    """
    from ray.job_submission import JobSubmissionClient

    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return JobSubmissionClient(address, headers=headers)


def wait(submission: Submission, out: TextIO | None = None, poll_s: float = 1.0) -> int:
    """Print the job's logs as they come until it ends; return its exit status.

    0 when the job succeeded; the build's own exit status when it failed
    (1 a failure, 2 bad input), or 1 when Ray reports none (stopped, lost).
    """
    from ray.job_submission import JobStatus

    out = out or sys.stdout
    client = job_client(submission.address)

    async def follow() -> None:
        async for lines in client.tail_job_logs(submission.job_id):
            out.write(lines)
            out.flush()

    try:
        asyncio.run(follow())
    except Exception as e:  # the log stream broke: fall back to polling the status
        logger.warning("Lost the job's log stream (%s); polling its status instead.", e)
    while not client.get_job_status(submission.job_id).is_terminal():
        time.sleep(poll_s)
    info = client.get_job_info(submission.job_id)
    print(f"bigntk submit: job {submission.job_id} {info.status}", file=out)
    if info.status == JobStatus.SUCCEEDED:
        return 0
    code = getattr(info, "driver_exit_code", None)
    return code if isinstance(code, int) and code > 0 else 1


def _copy_local_module(entry_point: str, staging: pathlib.Path) -> None:
    """Ship the entry point's top-level module when it is a file or package under the cwd."""
    top = entry_point.partition(":")[0].split(".")[0]
    cwd = pathlib.Path.cwd().resolve()
    added = str(cwd) not in sys.path
    if added:
        sys.path.insert(0, str(cwd))
    try:
        spec = importlib.util.find_spec(top)
    finally:
        if added:
            sys.path.remove(str(cwd))
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return
    origin = pathlib.Path(spec.origin).resolve()
    if cwd not in origin.parents:
        return  # installed: the cluster's environment must provide it
    if spec.submodule_search_locations:  # a package: copy its directory
        package = origin.parent
        shutil.copytree(package, staging / package.name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    else:
        shutil.copy2(origin, staging / origin.name)
