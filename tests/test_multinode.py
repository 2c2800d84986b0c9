"""A three-node Ray cluster on this machine: builds submitted as Ray jobs, a node killed mid-build.

The head (no CPUs: it runs only the job drivers) and two worker nodes, each
with 2 CPUs and 2 units of a custom ``bigntk_worker`` resource that the
build's workers ask for, are started with ``ray start --block`` in their own
process sessions, on loopback ports chosen here. The nodes' process trees are
killed at the end, also on failure; nothing else on the machine is touched
(no ``ray stop``).
"""

import contextlib
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest
import yaml

import bigntk as nt
from bigntk.cli import main
from bigntk.config import load_builtin, submit
from bigntk.errors import JobSubmitError
from bigntk.store import KernelStore

psutil = pytest.importorskip("psutil")

# Not beside the other Ray tests (they share one xdist worker and run one at a time).
pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]

BIN = pathlib.Path(sys.executable).parent
ROOT = pathlib.Path(__file__).resolve().parents[1]
N, BLOCK = 48, 8  # symmetric: 21 blocks of 8 x 8
SLOW_MODEL = textwrap.dedent(
    """
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np


    def _sleep(x):
        time.sleep(0.4)
        return x


    def apply(params, x):
        x = jax.pure_callback(_sleep, jax.ShapeDtypeStruct(x.shape, x.dtype), x,
                              vmap_method="broadcast_all")
        return jnp.tanh(x @ params[0]) @ params[1]


    def model(width=16):
        rng = np.random.default_rng(0)
        params = (rng.standard_normal((6, width), np.float32) / 2,
                  rng.standard_normal((width, 2), np.float32) / 4)
        return apply, params
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Runs a command that gets SIGKILL when this test process dies (Linux PR_SET_PDEATHSIG, which
# survives exec); with `ray start --block`, Ray's reaper then stops the node's other processes.
# (A preexec_fn would do the same, but makes subprocess fork, which JAX warns about.)
_DIE_WITH_PARENT = (
    "import ctypes, os, sys\n"
    "try:\n    ctypes.CDLL(None, use_errno=True).prctl(1, 9)\n"
    "except (OSError, AttributeError):\n    pass\n"
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class LocalCluster:
    """``ray start`` nodes on loopback, each a process session this object kills."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.temp_dir = tempfile.mkdtemp(prefix="bntk-", dir="/tmp")  # short: socket paths
        self.gcs_port, self.dashboard_port = _free_port(), _free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, object] = {}  # open as long as their node runs
        # token authentication on every node, as Ray's docs start a cluster (RAY_AUTH_MODE=token
        # and the token in a file); the clients get the token file but not RAY_AUTH_MODE, as
        # in a new shell (`client_env`)
        self.token_path = root / "auth_token"
        self.token_path.write_text(secrets.token_hex(32))
        path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != str(BIN)]
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")},
            # the venv is not on the nodes' PATH (`.venv/bin/ray start` without activating it):
            # the jobs must find bigntk's Python by themselves
            "PATH": os.pathsep.join(path),
            "RAY_AUTH_TOKEN_PATH": str(self.token_path),
            "RAY_USAGE_STATS_ENABLED": "0",
            # notice a dead node within ~3 s instead of ~30 s
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "2",
            "JAX_PLATFORMS": "cpu",
            "BIGNTK_TEST_CLUSTER": self.temp_dir,  # marks every process of this cluster
        }
        self.env.pop("RAY_ADDRESS", None)
        self.client_env = dict(self.env)
        self.env["RAY_AUTH_MODE"] = "token"

    def start_node(self, name: str, *args: str, timeout: float | None = 60.0) -> None:
        """Start a node; wait until every node started so far is alive (unless timeout=None)."""
        log = self.logs[name] = open(self.root / f"{name}.log", "w")  # noqa: SIM115
        self.nodes[name] = subprocess.Popen(
            [sys.executable, "-c", _DIE_WITH_PARENT, str(BIN / "ray"), "start", "--block",
             "--disable-usage-stats",
             "--dashboard-agent-listen-port", str(_free_port()), *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        if timeout is not None:
            self.wait_for_nodes(len(self.nodes), timeout)

    def start_worker_node(self, name: str) -> None:
        """A node with 2 CPUs and the resources the builds below ask for."""
        args = ("--address", f"127.0.0.1:{self.gcs_port}", "--num-cpus", "2",
                "--resources", json.dumps({"bigntk_worker": 2, f"node_{name}": 1}))  # fmt: skip
        try:
            self.start_node(name, *args)
        except RuntimeError:  # a port taken meanwhile by another process: once more
            self.kill(name)
            self.start_node(name, *args)

    def alive_nodes(self) -> list:
        with contextlib.suppress(Exception):  # the dashboard may not be up yet
            return [n for n in self.list("nodes") if n.state == "ALIVE"]
        return []

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token_path.read_text()}"}

    def list(self, resource: str, filters: list | None = None) -> list:
        """Ray's state API (``list_nodes``, ``list_actors``) on this cluster, with its token."""
        from ray.util.state import StateApiClient
        from ray.util.state.common import ListApiOptions, StateResource

        client = StateApiClient(address=self.address, headers=self.headers())
        options = ListApiOptions(filters=filters or [])
        return client.list(StateResource(resource), options, raise_on_missing_output=False)

    def jobs(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers=self.headers())

    def wait_for_nodes(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.alive_nodes()) != count:
            for name, proc in self.nodes.items():
                if proc.poll() is not None:
                    log = (self.root / f"{name}.log").read_text()[-2000:]
                    raise RuntimeError(f"ray node {name} exited ({proc.returncode}):\n{log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Ray nodes not alive after {timeout}s")
            time.sleep(0.3)

    def node_of(self, node_id: str) -> str:
        """Our name of the node with this Ray node id (from its custom resource)."""
        for node in self.alive_nodes():
            if node.node_id == node_id:
                return next(k.removeprefix("node_") for k in node.resources_total if
                            k.startswith("node_"))  # fmt: skip
        raise KeyError(node_id)

    def kill(self, name: str) -> None:
        """SIGKILL a node: its `ray start` process, its session and every descendant."""
        proc = self.nodes.pop(name)
        try:
            tree = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for child in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        proc.wait(timeout=10)
        psutil.wait_procs(tree, timeout=10)
        self.logs.pop(name).close()

    def shutdown(self) -> None:
        for name in reversed(list(self.nodes)):
            self.kill(name)
        # agents and workers that outlived their node (they re-parent to init)
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get("BIGNTK_TEST_CLUSTER") == self.temp_dir:
                    proc.kill()
        subprocess.run(["rm", "-rf", self.temp_dir], check=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    c = LocalCluster(root)
    try:
        c.start_node(
            "head", "--head", "--node-ip-address", "127.0.0.1", "--port", str(c.gcs_port),
            "--num-cpus", "0", "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(c.dashboard_port), "--temp-dir", c.temp_dir,
            "--ray-client-server-port", str(_free_port()),
        )  # fmt: skip
        # one after the other: two `ray start` on one host at once collide (raylet bind)
        for name in ("a", "b"):
            c.start_worker_node(name)
        yield c
    finally:
        c.shutdown()


def _bigntk(*args: str, env: dict, cwd: pathlib.Path, timeout: float = 120):
    return subprocess.run([str(BIN / "bigntk"), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _committed(store: pathlib.Path) -> int:
    """Blocks committed so far (0 while the job is still creating the store)."""
    try:
        return int(KernelStore.open(str(store)).committed().sum())
    except (FileNotFoundError, nt.errors.NotAStoreError, KeyError):
        return 0


def _wait_for_job(cluster, job_id: str, timeout: float) -> str:
    client = cluster.jobs()
    deadline = time.monotonic() + timeout
    while not (status := client.get_job_status(job_id)).is_terminal():
        assert time.monotonic() < deadline, client.get_job_logs(job_id)[-3000:]
        time.sleep(0.5)
    return str(status)


def test_job_survives_a_killed_node_resumes_and_reports_its_status(
    cluster, tmp_path, monkeypatch, capsys
):
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    store = tmp_path / "k.zarr"
    config = {
        "model": {"entry_point": "slowmodel:model", "args": {"width": 16}},
        "data": {"x1": {"builtin": "synthetic", "shape": [N, 6], "seed": 1}},
        # a host callback: batch independence is asserted (vmap_axes: 0), not provable
        "kernel": {"kinds": ["ntk"], "trace_axes": [-1], "vmap_axes": 0},
        "tiling": {"block_size": BLOCK},
        "output": {"path": "k.zarr"},  # relative: resolved here, as `bigntk build` does
        "ray": {"workers": 2, "resources": {"bigntk_worker": 1}},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    env = {**cluster.client_env, "RAY_API_SERVER_ADDRESS": cluster.address}

    # 1. submit (the entry point's module travels in the job's working_dir)
    run = _bigntk("submit", "cfg.yaml", "--no-pip", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.split("job ", 1)[1].split()[0]
    assert f"bigntk status {store}" in run.stdout and "ray job logs -f" in run.stdout

    # 2. once blocks are committed, the node running one of the build's workers is killed ...
    deadline = time.monotonic() + 60
    while _committed(store) < 2:
        assert time.monotonic() < deadline, (
            "no block committed within 60 s:\n" + (cluster.jobs().get_job_logs(job_id)[-3000:])
        )
        time.sleep(0.2)
    alive = [("class_name", "=", "BlockWorker"), ("state", "=", "ALIVE")]
    actors = cluster.list("actors", filters=alive)
    assert actors, cluster.list("actors")
    victim = cluster.node_of(actors[0].node_id)
    cluster.kill(victim)
    done_at_kill = _committed(store)
    assert main(["status", str(store)]) == 0  # the store reads fine while the job writes
    assert f"{store}: " in capsys.readouterr().out

    # 3. ... and a second submission for the store is refused while the job runs
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(cluster.token_path))  # bigntk finds it
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    with pytest.raises(JobSubmitError, match=f"Job {job_id} is already building {store}"):
        submit("cfg.yaml", cluster.address, pip=[])

    assert _wait_for_job(cluster, job_id, timeout=90) == "SUCCEEDED"
    logs = cluster.jobs().get_job_logs(job_id)
    assert "A worker died while computing block" in logs  # its block was recomputed elsewhere
    kernel = KernelStore.open(str(store))
    assert done_at_kill < kernel.plan.num_blocks, "the build ended before the node was killed"
    timings = kernel.meta["timings"]
    assert timings["device_kinds"] == ["cpu"]
    assert timings["placement"]["resources"] == {"bigntk_worker": 1}
    got = nt.open_kernel(str(store)).compute()
    sys.path.insert(0, str(tmp_path))
    try:
        import slowmodel

        f, params = slowmodel.model(width=16)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("slowmodel", None)
    x, _ = load_builtin("synthetic", shape=[N, 6], seed=1)
    want = np.asarray(nt.empirical_kernel_fn(f)(x, None, "ntk", params))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())

    # 4. the same config again resumes: nothing left to compute; --wait gives the job's status,
    # 5. also of a job that fails on the cluster: the build's own status (2: bad input)
    (tmp_path / "not_a_store").write_text("x")
    wait = ("submit", "cfg.yaml", "--no-pip", "--wait")
    fails = ("--set", "output.path=not_a_store")
    resumed, failed = [
        subprocess.Popen([str(BIN / "bigntk"), *wait, *extra], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for extra in ((), fails)
    ]  # fmt: skip
    (out, err), (fail_out, fail_err) = resumed.communicate(120), failed.communicate(120)
    assert resumed.returncode == 0, out[-3000:] + err
    assert f"0 blocks computed, {kernel.plan.num_blocks} resumed" in out
    assert "SUCCEEDED" in out
    assert failed.returncode == 2, fail_out[-3000:] + fail_err
    assert "not a bigntk kernel store" in fail_out


# Run in its own process, connected to the cluster (this test process may hold another Ray).
SOLVE_SCRIPT = textwrap.dedent(
    """
    import json, pathlib, sys, time
    import numpy as np
    import scipy.linalg
    import bigntk as nt
    from bigntk.solve import DistributedKernel
    from tests import builder_models as bm

    store, address, ready, go = sys.argv[1:]
    f, params = bm.mlp(width=32, out=3)
    nt.build_kernel(f, params, bm.data(120, seed=3), None, path=store, block_size=24,
                    progress=False, address=address, worker_resources={"num_cpus": 1})
    y = np.random.default_rng(0).standard_normal((120, 2))

    def pause(state):  # mid-solve: let the test kill a node holding part of the kernel
        if state.iterations == 2 and not pathlib.Path(go).exists():
            pathlib.Path(ready).write_text("ready")
            while not pathlib.Path(go).exists():
                time.sleep(0.1)

    kernel = DistributedKernel(store, address=address, workers=2)
    fitted = nt.solve.fit(kernel, y, method="cg", preconditioner=None, tol=1e-10,
                          progress=False, callback=pause)
    k = nt.open_kernel(store).compute().astype(np.float64)
    lam = fitted.info.diag_reg
    want = scipy.linalg.solve(k + lam * np.eye(len(k)), y, assume_a="pos")
    error = float(np.abs(fitted.alpha - want).max() / np.abs(want).max())
    print(json.dumps({"error": error, "restarts": kernel.restarts,
                      "iterations": fitted.info.iterations}))
    """
)


def test_distributed_solve_survives_a_killed_node(cluster, tmp_path):
    """A solve whose kernel two actors hold on two nodes; one node is killed mid-CG: its
    actor is restarted on the other node, rereads its blocks, and the solve equals SciPy's."""
    for name in ("a", "b"):  # the previous test killed one
        if name not in cluster.nodes:
            cluster.start_worker_node(name)
    ready, go = tmp_path / "ready", tmp_path / "go"
    script = tmp_path / "solve.py"
    script.write_text(SOLVE_SCRIPT)
    env = {
        **cluster.env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    run = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "k.zarr"), f"127.0.0.1:{cluster.gcs_port}",
         str(ready), str(go)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not ready.exists():
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the solve did not reach iteration 2"
            time.sleep(0.2)
        alive = [("class_name", "=", "BlockServer"), ("state", "=", "ALIVE")]
        holders = {cluster.node_of(a.node_id) for a in cluster.list("actors", filters=alive)}
        assert holders, cluster.list("actors")
        cluster.kill(sorted(holders)[0])
        go.write_text("go")
        out, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out + err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["restarts"] >= 1, result
    assert result["error"] < 1e-5, result
