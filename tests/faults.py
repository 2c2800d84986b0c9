"""Fault injection for kernel builds: a model that fails on demand, drivers in subprocesses.

Shared by ``tests/test_faults.py`` (a fast, seeded subset) and
``benchmarks/bench_faults.py`` (every fault, several times, with counts).

Every build here is the same small problem, so any two runs that complete
must give the same kernel bit for bit:

- ``"sym"``: the symmetric NTK of 48 examples, blocks of 8 (21 blocks, 36
  chunk files in format 1, with the mirrors; 21 in format 2);
- ``"rect"``: 48 x 8 examples, blocks of 8 (6 blocks, one column), where a
  sentinel in x1's row 27 makes exactly block (3, 0) fail while the trigger
  file exists.

The model sleeps ``delay`` seconds per call (two calls per block), so that
faults can land while a build runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SENTINEL = 7.25
SENTINEL_ROW = 27
BLOCK = 8


def _check(trigger: str | None, delay: float, x: np.ndarray) -> np.ndarray:
    if trigger and os.path.exists(trigger) and np.any(x == SENTINEL):
        raise RuntimeError(f"injected fault: the inputs hold the sentinel {SENTINEL}")
    time.sleep(delay)
    return x


def faulty_mlp(trigger: str | None = None, delay: float = 0.1):
    """An MLP ``f(params, x)`` that raises while ``trigger`` exists and x holds the sentinel.

    The trigger path and the delay are closure values: they do not enter the
    model's fingerprint, so runs with and without the fault resume each other.
    """
    check = functools.partial(_check, trigger, delay)

    def f(params, x):
        shape = jax.ShapeDtypeStruct(x.shape, x.dtype)
        x = jax.pure_callback(check, shape, x, vmap_method="broadcast_all")
        return jnp.tanh(x @ params[0]) @ params[1]

    return f


def problem(shape: str = "sym") -> tuple[Any, np.ndarray, np.ndarray | None]:
    """``(params, x1, x2)`` of the standard fault problem (the same in every process)."""
    with jax.enable_x64(False):
        k1, k2 = jax.random.split(jax.random.PRNGKey(3))
        params = (
            np.asarray(jax.random.normal(k1, (5, 16))),
            np.asarray(jax.random.normal(k2, (16, 2))),
        )
    x1 = np.random.default_rng(0).standard_normal((48, 5)).astype(np.float32)
    if shape == "sym":
        return params, x1, None
    x1[SENTINEL_ROW, 0] = SENTINEL
    x2 = np.random.default_rng(1).standard_normal((BLOCK, 5)).astype(np.float32)
    return params, x1, x2


def build(path: str, shape: str = "sym", trigger: str | None = None, delay: float = 0.1,
          **kwargs: Any):  # fmt: skip
    """``build_kernel`` of the standard problem into ``path``."""
    import bigntk as nt

    params, x1, x2 = problem(shape)
    # stores built separately are compared bit for bit: AUTO may pick differently per store
    kwargs.setdefault("implementation", 1)
    return nt.build_kernel(faulty_mlp(trigger, delay), params, x1, x2, path=str(path),
                           block_size=BLOCK, vmap_axes=0, progress=False, **kwargs)  # fmt: skip


# --- drivers in subprocesses ---------------------------------------------------------------

DRIVER = textwrap.dedent(
    """
    import json, sys, cloudpickle
    from tests import faults
    cloudpickle.register_pickle_by_value(faults)
    try:
        r = faults.build(sys.argv[1], **json.loads(sys.argv[2]))
        out = {"computed": r.computed, "skipped": r.skipped, "total": r.total}
    except Exception as e:
        out = {"error": type(e).__name__, "message": str(e)}
    print("RESULT " + json.dumps(out), flush=True)
    """
)


def driver_env() -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}


def parse_result(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(lines[-1][7:]) if lines else {"error": "NoResult", "message": stdout[-500:]}


def run_driver(path: str, timeout: float = 300, **options: Any) -> dict:
    """Run one build in a fresh driver process; ``{computed, skipped, total}`` or ``{error}``."""
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(path), json.dumps(options)],
        env=driver_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return parse_result(proc.stdout)


def start_driver(path: str, **options: Any) -> subprocess.Popen:
    """Start a build in a driver process (its own session, so its Ray dies with it)."""
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(path), json.dumps(options)],
        env=driver_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, start_new_session=True,
    )  # fmt: skip


def committed(path: str) -> int:
    """Blocks the manifest lists (0 while the store does not exist yet)."""
    from bigntk.store import KernelStore

    with contextlib.suppress(Exception):
        return int(KernelStore.open(str(path)).committed().sum())
    return 0


def written_uncommitted(path: str) -> int:
    """Blocks whose chunk files exist but which the manifest does not list (work to redo)."""
    from bigntk.store import KernelStore

    try:
        store = KernelStore.open(str(path))
    except Exception:
        return 0
    root = pathlib.Path(path) / store.kinds[0] / "c"
    pending = np.argwhere(store.plan.mask() & ~store.committed()).tolist()
    return sum((root / str(bi) / str(bj)).exists() for bi, bj in pending)


def wait_for(predicate, timeout: float, poll: float = 0.05) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def worker_pids(root_pid: int) -> list[int]:
    """Pids of the ``BlockWorker`` actors under the driver process ``root_pid``."""
    import psutil

    try:
        children = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in children:
        with contextlib.suppress(psutil.Error):
            if any("BlockWorker" in part for part in p.cmdline()):
                out.append(p.pid)
    return out


# --- comparing with an uninterrupted build -------------------------------------------------


def compare(path: str, reference: str) -> dict:
    """``{complete, identical, lost}`` of ``path`` against the uninterrupted ``reference``.

    ``lost``: blocks the manifest lists as committed whose stored values differ
    from the reference (or cannot be read), plus, for a complete build, blocks
    missing altogether.
    """
    from bigntk.store import KernelStore

    store, ref = KernelStore.open(str(path)), KernelStore.open(str(reference))
    plan = store.plan
    done = plan.mask() & store.committed()
    lost = 0
    for bi, bj in np.argwhere(plan.mask()).tolist():
        (r0, r1), (c0, c1) = plan.rows(bi), plan.cols(bj)
        regions = [(slice(r0, r1), slice(c0, c1))]
        if plan.symmetric and bi != bj:
            regions.append((slice(c0, c1), slice(r0, r1)))
        for kind in store.kinds:
            for sel in regions:
                try:
                    same = np.array_equal(store.values(kind)[sel], ref.values(kind)[sel])
                except Exception:
                    same = False
                if not same and done[bi, bj]:
                    lost += 1
                    break
            else:
                continue
            break
    complete = bool(done.sum() == plan.num_blocks)
    identical = False
    if complete:
        with contextlib.suppress(Exception):
            identical = all(
                np.array_equal(store.values(k)[...], ref.values(k)[...], equal_nan=True)
                for k in store.kinds
            )
    return {"complete": complete, "identical": identical, "lost": lost}


# --- store damage --------------------------------------------------------------------------


def chunk_files(path: str, kind: str = "ntk") -> list[pathlib.Path]:
    return sorted(p for p in (pathlib.Path(path) / kind / "c").rglob("*") if p.is_file())


def truncate_random_chunk(path: str, rng: random.Random) -> pathlib.Path:
    victim = rng.choice(chunk_files(path))
    data = victim.read_bytes()
    victim.write_bytes(data[: rng.randrange(0, len(data))])
    return victim


def plant_partials(path: str, rng: random.Random, count: int = 3) -> list[pathlib.Path]:
    """Orphan ``*.partial`` files as a killed writer leaves them (next to chunks, lease)."""
    out = []
    for _ in range(count):
        anchor = rng.choice(chunk_files(path) + [pathlib.Path(path) / "manifest" / "zarr.json"])
        partial = anchor.with_suffix(f".{rng.getrandbits(64):016x}.partial")
        partial.write_bytes(os.urandom(rng.randrange(1, 300)))
        out.append(partial)
    return out


# --- disk full -----------------------------------------------------------------------------


def can_mount_tmpfs() -> bool:
    """Whether ``unshare -rm`` lets this user mount a size-limited tmpfs (no root needed)."""
    if shutil.which("unshare") is None:
        return False
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d; rmdir $d"
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True,
                              timeout=20).returncode == 0  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False


_DISK_FULL = textwrap.dedent(
    """
    import json, subprocess, sys, warnings, cloudpickle, ray
    from tests import faults
    cloudpickle.register_pickle_by_value(faults)
    mount, size, reference, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount], check=True)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    path, out = mount + "/k.zarr", {}
    try:
        faults.build(path, delay=delay)
        out["first"] = "completed"
    except Exception as e:
        out["first"] = f"{type(e).__name__}: {e}"
    out["committed_when_full"] = faults.committed(path)
    out["written_uncommitted"] = faults.written_uncommitted(path)
    subprocess.run(["mount", "-o", "remount,size=4m", mount], check=True)  # space freed
    r = faults.build(path, delay=delay)
    out.update(computed=r.computed, skipped=r.skipped, total=r.total)
    if reference == "-":
        reference = mount + "/ref.zarr"
        faults.build(reference, delay=delay)
    out.update(faults.compare(path, reference))
    print("RESULT " + json.dumps(out), flush=True)
    """
)


def run_disk_full(
    workdir: str, size: str = "96k", reference: str | None = None, delay: float = 0.1
) -> dict:
    """A build into a ``size`` tmpfs (it fills up), then resumed after the tmpfs grows.

    Runs in a user and mount namespace (``unshare -rm``), so no root is needed;
    the tmpfs disappears with it. ``reference``: an uninterrupted build to
    compare with (None: built in the same process, on the tmpfs).
    """
    mount = pathlib.Path(workdir) / "tmpfs"
    mount.mkdir(parents=True, exist_ok=True)
    cmd = ["unshare", "-rm", sys.executable, "-c", _DISK_FULL, str(mount), size,
           reference or "-", str(delay)]  # fmt: skip
    proc = subprocess.run(cmd, env=driver_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    result = parse_result(proc.stdout)
    if "error" in result:
        result["stderr"] = proc.stderr[-2000:]
    return result
