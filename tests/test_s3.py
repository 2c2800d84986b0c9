"""Stores and inputs behind fsspec URLs: a real S3 API (moto's server on loopback) and memory://.

The S3 server runs in this process; Ray workers are other processes that
reach it over HTTP with the credentials and endpoint the driver forwards to
them in their runtime_env.
"""

import collections
import logging
import os
import re
import socket
import urllib.request

import numpy as np
import pytest
import zarr

import bigntk as nt
from bigntk.build._data import FsspecNpySource, MemorySource, url_source
from bigntk.build._driver import check_store_url
from bigntk.cli import main
from bigntk.errors import BuildInputError
from bigntk.store import KernelStore, forwarded_env
from tests import builder_models as bm

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "kernels"


class _Requests(logging.Handler):
    """Collects (method, path) of every request the S3 server answers."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def emit(self, record):
        match = re.search(r'"([A-Z]+) (\S+) HTTP', record.getMessage())
        if match:
            self.seen.append((match.group(1), match.group(2)))


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1, the AWS_* variables pointing at it, one bucket."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    requests = _Requests()
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.addHandler(requests)
    werkzeug.propagate = False
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto's buckets live in the process, not the server: a second server of this process
    # (this module's tests split across xdist workers, then one module set up twice in
    # one) starts with the first's buckets unless reset
    reset = f"http://127.0.0.1:{port}/moto-api/reset"
    urllib.request.urlopen(urllib.request.Request(reset, method="POST"), timeout=30).read()
    env = {
        "AWS_ACCESS_KEY_ID": "bigntk-test",
        "AWS_SECRET_ACCESS_KEY": "bigntk-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    try:
        _close_s3_sessions(s3fs)
        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        yield fs, requests
    finally:
        _close_s3_sessions(s3fs)
        server.stop()
        werkzeug.removeHandler(requests)
        werkzeug.propagate = True
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _close_s3_sessions(s3fs):
    """Close the HTTP sessions of the cached S3 filesystems, then drop them from the cache.

    Zarr opens a URL with an asynchronous S3FileSystem on its own event loop; s3fs
    registers no finalizer for those, so a dropped one leaves an open aiohttp session
    whose ResourceWarning (an error here) fires in whichever test the collector runs.
    """
    from zarr.core.sync import sync

    for fs in list(s3fs.S3FileSystem._cache.values()):
        session = getattr(fs, "_s3creator", None)
        if fs.asynchronous and session is not None:
            sync(session.__aexit__(None, None, None))
            fs._s3creator = fs._s3 = None
    s3fs.S3FileSystem.clear_instance_cache()


def _put_npy(fs, url, array):
    with fs.open(url, "wb") as fh:
        np.save(fh, array)


def test_npy_on_s3_is_read_by_row_ranges(s3):
    fs, requests = s3
    x = np.arange(7 * 3 * 2, dtype=np.float32).reshape(7, 3, 2)
    _put_npy(fs, f"s3://{BUCKET}/x.npy", x)
    src = url_source(f"s3://{BUCKET}/x.npy")
    assert isinstance(src, FsspecNpySource) and (src.shape, src.dtype) == (x.shape, x.dtype)
    np.testing.assert_array_equal(src.read(2, 5), x[2:5])
    np.testing.assert_array_equal(src.read(5, 99), x[5:])
    assert src.read(4, 4).shape == (0, 3, 2)
    np.testing.assert_array_equal(src._open()[-1], x[-1])
    # the same fingerprint as the file on disk: a store resumes whichever way the data is given
    assert src.fingerprint() == MemorySource(x).fingerprint()
    _put_npy(fs, f"s3://{BUCKET}/big_endian.npy", x.astype(">f4"))
    swapped = url_source(f"s3://{BUCKET}/big_endian.npy")
    assert swapped.dtype == np.float32 and swapped.read(1, 3).dtype.isnative
    np.testing.assert_array_equal(swapped.read(1, 3), x[1:3])
    _put_npy(fs, f"s3://{BUCKET}/fortran.npy", np.asfortranarray(x))
    with pytest.raises(BuildInputError, match="C-ordered"):
        url_source(f"s3://{BUCKET}/fortran.npy")


def test_memory_urls_hold_inputs_but_not_stores():
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    zarr.create_array("memory://bigntk-test/x.zarr", data=x, chunks=(2, 4))
    source = url_source("memory://bigntk-test/x.zarr")
    assert isinstance(source, MemorySource)  # read here: workers cannot see this process
    np.testing.assert_array_equal(source.read(0, 5), x)
    with pytest.raises(BuildInputError, match="memory:// store lives inside one process"):
        check_store_url("memory://bigntk-test/k.zarr")
    f, params = bm.mlp()
    with pytest.raises(BuildInputError, match="memory://"):
        nt.build_kernel(f, params, x, path="memory://bigntk-test/k.zarr", progress=False)


def test_forwarded_env_follows_the_protocols():
    environ = {
        "AWS_SECRET_ACCESS_KEY": "s",
        "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
        "FSSPEC_S3_ANON": "false",
        "HOME": "/root",
    }
    assert forwarded_env(["/local/k.zarr"], environ) == {"FSSPEC_S3_ANON": "false"}
    assert set(forwarded_env(["s3://b/k.zarr", None], environ)) == {
        "AWS_SECRET_ACCESS_KEY",
        "FSSPEC_S3_ANON",
    }
    assert "GOOGLE_APPLICATION_CREDENTIALS" in forwarded_env(["gs://b/x.zarr"], environ)


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.xdist_group("ray")
def test_build_on_s3_from_two_worker_processes(s3, capsys):
    """Inputs and store on S3; two Ray workers write every chunk as one whole object."""
    fs, requests = s3
    f, params = bm.mlp()
    x1, x2 = bm.data(10, seed=1), bm.data(7, seed=2)
    _put_npy(fs, f"s3://{BUCKET}/in/x1.npy", x1)
    zarr.create_array(f"s3://{BUCKET}/in/x2.zarr", data=x2, chunks=(3, 5))
    url = f"s3://{BUCKET}/rect.zarr"
    requests.seen.clear()
    result = nt.build_kernel(
        f, params, f"s3://{BUCKET}/in/x1.npy", f"s3://{BUCKET}/in/x2.zarr", path=url,
        kinds=("nngp", "ntk"), block_size=4, workers=2, progress=False,
        worker_resources={"num_cpus": 1},
    )  # fmt: skip
    assert result.computed == result.total == 6
    chunk = re.compile(rf"^/{BUCKET}/rect\.zarr/(ntk|nngp)/c/\d+/\d+$")
    puts = collections.Counter(p for m, p in requests.seen if m == "PUT" and chunk.match(p))
    assert len(puts) == 2 * 6 and set(puts.values()) == {1}  # one whole PUT per chunk
    assert not [p for m, p in requests.seen if m in ("GET", "POST") and chunk.match(p)]
    meta = KernelStore.open(url).meta
    assert len({w["pid"] for w in meta["timings"]["workers"]}) == 2
    assert meta["timings"]["device_kinds"] == ["cpu"]
    for worker in meta["timings"]["workers"]:  # JAX memory settings reached the workers
        assert worker["xla_env"] == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    expected = nt.empirical_kernel_fn(f)(x1, x2, ("nngp", "ntk"), params)
    for kind in ("nngp", "ntk"):
        got = nt.open_kernel(url, kind).compute()
        want = np.asarray(getattr(expected, kind))
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
    assert main(["status", url]) == 0  # the CLI reads the store where it is
    assert "6/6 blocks (100.0%), complete" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="No kernel store at s3://"):
        KernelStore.open(f"s3://{BUCKET}/missing.zarr")
    again = nt.build_kernel(
        f, params, f"s3://{BUCKET}/in/x1.npy", f"s3://{BUCKET}/in/x2.zarr", path=url,
        kinds=("nngp", "ntk"), block_size=4, workers=2, progress=False,
    )  # fmt: skip
    assert (again.computed, again.skipped) == (0, 6)


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.xdist_group("ray")
def test_symmetric_build_on_s3_writes_each_block_once_and_whole(s3):
    fs, requests = s3
    f, params = bm.mlp()
    x = bm.data(11, seed=3)
    url = f"s3://{BUCKET}/sym.zarr"
    requests.seen.clear()
    nt.build_kernel(f, params, x, None, path=url, block_size=4, workers=2, progress=False)
    chunk = re.compile(rf"^/{BUCKET}/sym\.zarr/(diagonal_)?ntk/c/\d+/\d+$")
    puts = collections.Counter(p for m, p in requests.seen if m == "PUT" and chunk.match(p))
    assert len(puts) == 6 and set(puts.values()) == {1}  # 6 blocks i <= j, no mirrors
    upper = {tuple(map(int, p.split("/")[-2:])) for p in puts if "/ntk/" in p}
    assert upper == {(i, j) for i in range(3) for j in range(i + 1, 3)}
    packed = {int(p.split("/")[-2]) for p in puts if "/diagonal_ntk/" in p}  # (bi, 0): packed
    assert packed == {0, 1, 2}
    got = nt.open_kernel(url).compute()
    want = np.asarray(nt.empirical_kernel_fn(f)(x, None, "ntk", params))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
    np.testing.assert_array_equal(got, got.T)
