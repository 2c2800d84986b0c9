"""One writer per store: the lease (bigntk/store/_lease.py), alone and in real builds."""

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import jax
import numpy as np
import pytest

import bigntk as nt
from bigntk.cli import main
from bigntk.errors import LeaseLostError, NotAStoreError, StoreLockedError
from bigntk.store import KernelStore, StoreWriter
from bigntk.store._layout import BEAT_PREFIX, LEASE_KEY
from bigntk.store._lease import StoreLease
from bigntk.store._writer_lease import holder, writer_lease
from tests import builder_models as bm

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _spec():
    layout = {"n1": 8, "n2": 8, "block": 4, "symmetric": True, "diagonal": False,
              "dims": ["x1", "x2"], "out_shape": [], "dtype": "float32"}  # fmt: skip
    return {"kinds": ["ntk"], "layout": layout, "model": "m", "x1": "a", "x2": None}


def _store(tmp_path, name="k.zarr"):
    store, _ = StoreWriter.create_or_resume(str(tmp_path / name), _spec())
    return store


def _lease(store, ttl=60.0):
    return StoreLease(store.group.store_path, store.path, ttl)


def _plant(store, **fields):
    """Write a lease document as another driver would have."""
    now = time.time()
    doc = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": None,
           "started": now, "heartbeat": now, "ttl": 60.0, "token": "t0"}  # fmt: skip
    doc.update(fields)
    (pathlib.Path(store.path) / LEASE_KEY).write_text(json.dumps(doc))
    return doc


def test_second_holder_is_refused_naming_the_first(tmp_path, capsys):
    store = _store(tmp_path)
    first, second = _lease(store), _lease(store)
    first.acquire()
    assert holder(store.path)["token"] == first.token
    assert main(["status", store.path]) == 0
    assert f"being written by: host {socket.gethostname()} pid {os.getpid()}" in (
        capsys.readouterr().out
    )
    with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}") as e:
        second.acquire(wait=0)
    assert socket.gethostname() in str(e.value) and "started" in str(e.value)
    first.release()
    assert holder(store.path) is None
    second.acquire(wait=0)
    second.release()


def test_waiting_holder_gets_the_lease_when_it_is_released(tmp_path):
    store = _store(tmp_path)
    first, second = _lease(store), _lease(store)
    first.acquire()
    threading.Timer(0.7, first.release).start()
    start = time.monotonic()
    second.acquire(wait=30)
    assert 0.5 < time.monotonic() - start < 10 and holder(store.path)["token"] == second.token
    start = time.monotonic()
    with pytest.raises(StoreLockedError):  # a wait shorter than the holder's build times out
        first.acquire(wait=0.6)
    assert time.monotonic() - start >= 0.6
    second.release()


@pytest.mark.parametrize(
    "stale",
    [
        {"host": "elsewhere", "heartbeat": time.time() - 3600},  # heartbeat too old
        {"pid": 2**22 + 12345},  # same host, the process is gone
        {"pid_start": 1.0},  # same host, the pid now belongs to another process
    ],
    ids=["expired", "dead-pid", "reused-pid"],
)
def test_a_dead_holders_lease_is_taken_over(tmp_path, stale):
    store = _store(tmp_path)
    _plant(store, **stale)
    lease = _lease(store)
    lease.acquire(wait=0)
    assert holder(store.path)["token"] == lease.token != "t0"
    lease.release()


def test_a_live_foreign_holder_is_respected_until_its_heartbeat_expires(tmp_path):
    store = _store(tmp_path)
    _plant(store, host="elsewhere", ttl=1.0)
    with pytest.raises(StoreLockedError, match="host elsewhere"):
        _lease(store).acquire(wait=0)
    lease = _lease(store)
    lease.acquire(wait=10)  # the planted lease is never renewed: taken over after ~1 s
    lease.release()


def test_heartbeat_renews_and_a_taken_lease_stops_commits(tmp_path):
    store = _store(tmp_path)
    lease = _lease(store, ttl=0.4)
    lease.acquire()
    beat = holder(store.path)["heartbeat"]
    time.sleep(0.5)
    assert holder(store.path)["heartbeat"] > beat  # renewed by the background thread
    store.commit_guard = lease.check
    _plant(store, token="usurper", host="elsewhere")  # another driver took it over
    time.sleep(0.4)
    done = np.zeros(store.plan.grid, bool)
    done[0, 0] = True
    with pytest.raises(LeaseLostError, match="lost its writer lease"):
        store.commit(np.array([[0, 0]]), done)
    assert not store.committed().any()
    lease.release()
    assert holder(store.path)["token"] == "usurper"  # not ours: left alone


def test_a_heartbeat_never_writes_over_a_lease_taken_meanwhile(tmp_path):
    # the race the old heartbeat had: it read its own token, another driver took the
    # lease over, and the heartbeat's write put ours back. Heartbeats now go to their
    # own object, so the takeover stands and is seen.
    store = _store(tmp_path)
    lease = _lease(store)
    lease.acquire()
    planted = _plant(store, token="usurper", host="elsewhere")
    lease.heartbeat()
    assert holder(store.path) == planted  # the lease object is not rewritten
    assert lease.lost is not None
    assert not (pathlib.Path(store.path) / (BEAT_PREFIX + "usurper")).exists()
    lease.release()
    assert holder(store.path) == planted


def test_a_commit_checks_the_store_not_only_the_heartbeat(tmp_path):
    store = _store(tmp_path)
    lease = _lease(store, ttl=3600.0)  # the heartbeat thread does not run during the test
    lease.acquire()
    store.commit_guard = lease.check
    done = np.zeros(store.plan.grid, bool)
    done[0, 0] = True
    store.commit(np.array([[0, 0]]), done)  # still ours: commits
    _plant(store, token="usurper", host="elsewhere")
    done[0, 1] = True
    with pytest.raises(LeaseLostError, match="now held by host elsewhere"):
        store.commit(np.array([[0, 1]]), done)
    assert store.committed().sum() == 1
    lease.release()


def test_a_fresh_heartbeat_keeps_an_old_lease_alive_and_takeover_removes_it(tmp_path):
    store = _store(tmp_path)
    lease = _lease(store, ttl=1.0)
    lease.acquire()
    doc = (pathlib.Path(store.path) / LEASE_KEY).read_text()
    time.sleep(1.5)  # the lease object's own heartbeat is now older than its ttl
    assert json.loads(doc)["heartbeat"] < time.time() - 1.0
    other = _lease(store)
    with pytest.raises(StoreLockedError):  # the beat object says the holder is alive
        other.acquire(wait=0)
    lease._stop.set()  # the holder hangs: no more heartbeats
    lease._thread.join()
    beat = pathlib.Path(store.path) / (BEAT_PREFIX + lease.token)
    assert beat.exists()
    other.acquire(wait=5)  # taken over once the last beat is older than the ttl
    assert not beat.exists()  # the dead holder's beat object went with its lease
    assert holder(store.path)["token"] == other.token
    with pytest.raises(LeaseLostError):
        lease.check()
    other.release()
    assert holder(store.path) is None


def test_writer_lease_survives_overwrite_and_ignores_non_stores(tmp_path):
    (tmp_path / "file").write_text("x")
    with writer_lease(str(tmp_path / "file")) as lease:  # not a store: nothing held yet
        assert lease.lease is None
    store = _store(tmp_path)
    with writer_lease(store.path) as lease:
        assert holder(store.path)["token"] == lease.lease.token
        other = _store(tmp_path)  # stands in for create_or_resume's recreated store
        (pathlib.Path(store.path) / LEASE_KEY).unlink()  # as an overwrite would remove it
        lease.hold(other)
        assert holder(store.path)["token"] == lease.lease.token
        with pytest.raises(StoreLockedError), writer_lease(store.path):
            pass
    assert holder(store.path) is None


def test_creating_a_new_store_is_under_the_lease_too(tmp_path):
    """Two drivers starting the same new store at once: the second waits or is refused."""
    from tests.test_store import _spec

    path = str(tmp_path / "new.zarr")
    with writer_lease(path) as first:
        assert first.lease is not None and holder_token(path) == first.lease.token
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"), writer_lease(path):
            pass
        store, resumed = StoreWriter.create_or_resume(path, _spec())
        assert not resumed
        first.hold(store)
        assert holder(path)["token"] == first.lease.token  # the same lease, now the store's
    assert holder(path) is None
    # a path where no store got created is left as it was: nothing
    with writer_lease(str(tmp_path / "never.zarr")):
        pass
    assert not (tmp_path / "never.zarr").exists()


def holder_token(path):
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync
    from zarr.storage import LocalStore

    raw = sync(LocalStore(path).get(LEASE_KEY, prototype=default_buffer_prototype()))
    return json.loads(raw.to_bytes())["token"]


# --- object stores (no atomic create-if-absent: write, then read back) -----------------------


def _check_two_holders(store_path, where):
    first, second = StoreLease(store_path, where), StoreLease(store_path, where)
    first.acquire()
    with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
        second.acquire(wait=0)
    first.release()
    assert first.read() is None
    second.acquire(wait=0)
    second.release()


def test_lease_through_fsspec(tmp_path):
    from zarr.storage import FsspecStore, StorePath

    store = _store(tmp_path)
    fs_store = FsspecStore.from_url(f"file://{store.path}", read_only=False)
    _check_two_holders(StorePath(fs_store, ""), f"file://{store.path}")


_S3 = textwrap.dedent(
    """
    import os, socket, pytest, s3fs
    from moto.server import ThreadedMotoServer
    from bigntk.store import KernelStore, StoreWriter
    from bigntk.store._writer_lease import holder, writer_lease
    from bigntk.errors import StoreLockedError
    from tests.test_lease import _check_two_holders, _spec

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s",
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    s3fs.S3FileSystem().mkdir("leases")
    url = "s3://leases/k.zarr"
    StoreWriter.create_or_resume(url, _spec())
    _check_two_holders(StoreWriter.open(url).group.store_path, url)
    with writer_lease(url) as lease:  # the driver's entry point, by URL
        assert holder(url)["token"] == lease.lease.token
        with pytest.raises(StoreLockedError, match="host"), writer_lease(url):
            pass
    assert holder(url) is None
    server.stop()
    print("S3 LEASE OK")
    """
)


def test_lease_on_s3():
    """On a real S3 API (moto's server; in a subprocess: s3fs leaves sessions open at exit)."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _S3], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert "S3 LEASE OK" in out.stdout, out.stderr[-3000:]


# --- real drivers --------------------------------------------------------------------------

_DRIVER = textwrap.dedent(
    """
    import sys, cloudpickle, bigntk as nt
    from tests import builder_models as bm
    cloudpickle.register_pickle_by_value(bm)
    nt.build_kernel(bm.slow_mlp_fn, bm.slow_mlp_params(), bm.data(64), path=sys.argv[1],
                    block_size=8, vmap_axes=0, progress=False)
    """
)


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.xdist_group("ray")
def test_second_driver_refused_then_sigkilled_holder_does_not_block_resume(tmp_path):
    path = str(tmp_path / "k.zarr")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, path], env=env, cwd=ROOT,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 90
        committed = 0
        while time.time() < deadline and proc.poll() is None and committed < 2:
            with contextlib.suppress(NotAStoreError, KeyError, FileNotFoundError):
                committed = int(KernelStore.open(path).committed().sum())
            time.sleep(0.1)
        assert proc.poll() is None and committed >= 2, "the first build finished or never started"
        with jax.enable_x64(False):  # the first driver's float32 parameters, bit for bit
            params, x = bm.slow_mlp_params(), bm.data(64)  # 36 blocks: ~5 s left to refuse in
        kw = dict(path=path, block_size=8, vmap_axes=0, progress=False)
        with pytest.raises(StoreLockedError, match=f"pid {proc.pid}"):
            nt.build_kernel(bm.slow_mlp_fn, params, x, **kw)
        assert proc.poll() is None  # the refused driver did not disturb the first one
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert holder(path)["pid"] == proc.pid  # the dead holder's lease is still there
    result = nt.build_kernel(bm.slow_mlp_fn, params, x, **kw)
    assert result.skipped >= 2 and result.computed + result.skipped == 36
    assert holder(path) is None  # released at the end
    want = nt.empirical_ntk_fn(bm.slow_mlp_fn, vmap_axes=None)(x, None, params)
    np.testing.assert_allclose(nt.open_kernel(path).compute(), want, rtol=2e-5, atol=1e-5)
