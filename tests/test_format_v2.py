"""Store formats 2 and 3: each symmetric block stored once (format 3: the diagonal blocks packed),
a CRC32C in each chunk; formats 1 and 2 still read."""

import pathlib
import shutil

import dask.array as da
import numpy as np
import pytest
import zarr

import bigntk as nt
from bigntk.cli import main
from bigntk.errors import IncompleteKernelError
from bigntk.store import (
    FORMAT_VERSION,
    KernelStore,
    StoreWriter,
    SymmetricArray,
    mirror_lower_blocks,
    open_kernel,
    scan,
)
from tests import builder_models as bm

DIMS = ("x1", "x2", "out1_1", "out1_2", "out2")


def _spec(n, block, out=(2, 2, 3), dims=DIMS):
    layout = {"n1": n, "n2": n, "block": block, "symmetric": True, "diagonal": False,
              "dims": list(dims), "out_shape": list(out), "dtype": "float32"}  # fmt: skip
    return {"kinds": ["ntk"], "layout": layout, "model": "m", "x1": "a", "x2": None}


def _symmetric(n, out=(2, 2, 3), seed=0):
    """A kernel ``(n, n, *out)`` equal to its mirror (x1/x2 and out1_1/out1_2 swapped)."""
    a = np.random.default_rng(seed).standard_normal((n, n, *out)).astype(np.float32)
    return (a + a.transpose(1, 0, 3, 2, 4)) / np.float32(2)


def _write(path, kernel, block, version=FORMAT_VERSION):
    """A complete store of ``kernel``, written block by block as a build's workers do."""
    store, _ = StoreWriter.create_or_resume(
        str(path), _spec(len(kernel), block, kernel.shape[2:]), format_version=version
    )
    done = np.zeros(store.plan.grid, bool)
    for bi, bj in store.plan.pending(done).tolist():
        (r0, r1), (c0, c1) = store.plan.rows(bi), store.plan.cols(bj)
        store.checksums.record((bi, bj), store.write_block(bi, bj, {"ntk": kernel[r0:r1, c0:c1]}))
        done[bi, bj] = True
    store.commit(np.argwhere(done), done)
    return store


def _bytes(path, kind="ntk"):
    """Bytes of the kernel's chunks and metadata (format 3: its packed diagonal blocks too)."""
    folders = [pathlib.Path(path) / name for name in (kind, "diagonal_" + kind)]
    return sum(p.stat().st_size for f in folders for p in f.rglob("*") if p.is_file())


def as_format_1(path):
    """Rewrite a complete symmetric store of a build as format 1 wrote it.

    Mirrors on disk, no chunk codec, checksums of each block and its mirror; the
    spec, probe and other attributes kept, so that the same build resumes it.
    """
    return as_format(path, 1)


def as_format(path, version):
    """Rewrite a complete symmetric store of a build as format ``version`` wrote it."""
    path = str(path)
    old = KernelStore.open(path)
    meta, done = old.meta, old.committed()
    kernels = {kind: open_kernel(path, kind).compute() for kind in old.kinds}
    shutil.rmtree(path)
    store, _ = StoreWriter.create_or_resume(
        path, meta["spec"], versions=meta["versions"], probe=meta.get("probe"),
        format_version=version,
    )  # fmt: skip
    kept = ("format", "spec", "spec_hash", "versions", "probe")
    store.update_meta(**{k: v for k, v in meta.items() if k not in kept})
    for bi, bj in np.argwhere(done).tolist():
        (r0, r1), (c0, c1) = store.plan.rows(bi), store.plan.cols(bj)
        values = {kind: k[r0:r1, c0:c1] for kind, k in kernels.items()}
        store.checksums.record((bi, bj), store.write_block(bi, bj, values))
    store.commit(np.argwhere(done), done)
    assert KernelStore.open(path).format == version
    return store


# --- without Ray ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_symmetric_store_reads_back_exactly_and_exactly_symmetric(tmp_path, version):
    kernel = _symmetric(23)  # blocks of 5: a 5 x 5 grid, the last row/column cropped
    store = _write(tmp_path / "k.zarr", kernel, 5, version)
    assert store.format == version
    got = open_kernel(str(tmp_path / "k.zarr"))
    assert got.chunks[:2] == ((5, 5, 5, 5, 3),) * 2  # one Dask chunk per block
    part = got[3:19, 1:22:2, :, 1].compute()  # across upper, lower and diagonal blocks
    np.testing.assert_array_equal(part, kernel[3:19, 1:22:2, :, 1])
    got = got.compute()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, kernel)
    np.testing.assert_array_equal(got, got.transpose(1, 0, 3, 2, 4))
    assert not scan(KernelStore.open(str(tmp_path / "k.zarr")), symmetry=True).problems


def test_format_2_stores_about_half_the_bytes_of_format_1(tmp_path):
    kernel = _symmetric(64, out=(2, 2, 1))  # a grid of 8 x 8: 36 of 64 blocks stored
    _write(tmp_path / "v1.zarr", kernel, 8, version=1)
    _write(tmp_path / "v2.zarr", kernel, 8, version=2)
    v1, v2 = _bytes(tmp_path / "v1.zarr"), _bytes(tmp_path / "v2.zarr")
    assert v1 > kernel.nbytes  # every block on disk (and the array's metadata)
    assert 0.55 < v2 / v1 < 0.58  # (8 + 1) / (2 * 8) = 0.5625, plus 4 bytes of CRC a chunk
    chunks = [p for p in (tmp_path / "v2.zarr" / "ntk" / "c").rglob("*") if p.is_file()]
    assert len(chunks) == 36
    np.testing.assert_array_equal(open_kernel(str(tmp_path / "v2.zarr")).compute(), kernel)


def test_format_3_stores_each_pair_of_examples_once(tmp_path):
    kernel = _symmetric(64, out=(2, 2, 1))  # 8 x 8 blocks of 8: 28 upper, 8 diagonal
    store = _write(tmp_path / "v3.zarr", kernel, 8)
    assert store.format == FORMAT_VERSION == 3 and store.packed
    ntk = tmp_path / "v3.zarr" / "ntk" / "c"
    assert len([p for p in ntk.rglob("*") if p.is_file()]) == 28  # no diagonal chunk
    packed = [p for p in (tmp_path / "v3.zarr" / "diagonal_ntk" / "c").rglob("*") if p.is_file()]
    assert len(packed) == 8
    per_entry = 2 * 2 * 1 * 4
    assert sum(p.stat().st_size for p in packed) == 8 * (36 * per_entry + 4)  # 8 * 9 / 2 pairs
    entries = 28 * 64 + 8 * 36  # = n (n + 1) / 2: each pair of examples once
    assert entries == 64 * 65 // 2 == nt.store.stored_entries(3, store.plan)
    chunk_bytes = (28 + 8) * 4 + entries * per_entry  # and a CRC32C each
    assert chunk_bytes < _bytes(tmp_path / "v3.zarr") < chunk_bytes + 4096  # + metadata
    assert entries * per_entry / kernel.nbytes == 0.5 + 1 / (2 * 64)  # half, and the diagonal
    np.testing.assert_array_equal(open_kernel(str(tmp_path / "v3.zarr")).compute(), kernel)


def test_a_cropped_last_diagonal_block_packs_and_reads_back(tmp_path):
    kernel = _symmetric(13, out=(2, 2, 3))  # blocks of 5: the last one 3 rows
    store = _write(tmp_path / "k.zarr", kernel, 5)
    packed = np.asarray(store.packed_array("ntk")[2])
    assert np.isfinite(packed[:6]).all() and np.isnan(packed[6:]).all()  # 3 * 4 / 2 pairs
    np.testing.assert_array_equal(store.block("ntk", 2, 2), kernel[10:13, 10:13])
    np.testing.assert_array_equal(store.values("ntk")[9:13, 8:13], kernel[9:13, 8:13])
    np.testing.assert_array_equal(open_kernel(str(tmp_path / "k.zarr")).compute(), kernel)


@pytest.mark.parametrize("version", [2, 3])
def test_symmetric_array_indexing_matches_numpy(tmp_path, version):
    kernel = _symmetric(17)
    store = _write(tmp_path / "k.zarr", kernel, 4, version)
    values = store.values("ntk")
    assert isinstance(values, SymmetricArray) and values.shape == kernel.shape
    for key in [(slice(None),), (3, slice(2, 15, 3)), (slice(9, 2, None),), (..., 1, 0, 2),
                (16, 0), (-1, slice(None), 0), (slice(1, 17, 5), slice(0, 4), ..., 2)]:  # fmt: skip
        np.testing.assert_array_equal(values[key], kernel[key])
    rows, cols = np.array([16, 0, 5, 5, 9]), np.array([3, 12, 1])
    np.testing.assert_array_equal(values.oindex[rows, cols], kernel[np.ix_(rows, cols)])
    np.testing.assert_array_equal(values.oindex[rows, rows], kernel[np.ix_(rows, rows)])
    np.testing.assert_array_equal(values.oindex[7, cols, 1:2], kernel[7, cols, 1:2])
    np.testing.assert_array_equal(np.asarray(values), kernel)
    with pytest.raises(IndexError, match="out of bounds"):
        values[17]


def test_a_damaged_chunk_fails_a_plain_dask_and_zarr_read(tmp_path, capsys):
    path = tmp_path / "k.zarr"
    _write(path, _symmetric(12), 4)
    chunk = path / "ntk" / "c" / "0" / "1" / "0" / "0" / "0"  # chunk (0, 1, 0, 0, 0)
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 3] ^= 0x01  # one bit of one value
    chunk.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum do not match"):
        da.from_zarr(str(path / "ntk")).compute()
    with pytest.raises(ValueError, match="checksum do not match"):
        zarr.open_array(str(path / "ntk"), mode="r")[0:4, 4:8]
    with pytest.raises(ValueError, match="checksum do not match"):
        open_kernel(str(path)).compute()  # the lower block (1, 0) is read from it too
    assert main(["verify", str(path), "--checksums"]) == 1
    out = capsys.readouterr().out
    assert "FAIL block (0, 1) ntk: unreadable: chunk (0, 1) of ntk cannot be read" in out
    assert "ValueError: Stored and computed checksum do not match" in out
    assert "FAIL: 1 of 6 committed blocks are damaged" in out


def test_a_damaged_packed_diagonal_chunk_fails_every_read(tmp_path, capsys):
    path = tmp_path / "k.zarr"
    _write(path, _symmetric(12), 4)
    chunk = path / "diagonal_ntk" / "c" / "1" / "0" / "0" / "0" / "0"  # diagonal block (1, 1)
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum do not match"):
        open_kernel(str(path)).compute()
    with pytest.raises(ValueError, match="checksum do not match"):
        KernelStore.open(str(path)).values("ntk")[4, 5]
    np.testing.assert_array_equal(open_kernel(str(path))[:4].compute(), _symmetric(12)[:4])
    assert main(["verify", str(path), "--checksums"]) == 1
    out = capsys.readouterr().out
    assert "FAIL block (1, 1) ntk: unreadable: chunk (1, 0) of diagonal_ntk cannot be read" in out
    assert "FAIL: 1 of 6 committed blocks are damaged" in out


def test_xarray_and_mirrored_lower_blocks(tmp_path):
    xarray = pytest.importorskip("xarray")
    path = str(tmp_path / "k.zarr")
    kernel = _symmetric(10)
    _write(path, kernel, 4)
    got = open_kernel(path, xarray=True)
    assert isinstance(got, xarray.DataArray) and got.dims == DIMS
    np.testing.assert_array_equal(got.values, kernel)
    raw = xarray.open_zarr(path, consolidated=False)["ntk"].values  # raw reader: lower blocks NaN
    np.testing.assert_array_equal(raw[0:4, 4:10], kernel[0:4, 4:10])
    assert np.isnan(raw[4:10, 0:4]).all() and np.isnan(raw[8:10, 4:8]).all()
    assert np.isnan(raw[0:4, 0:4]).all() and np.isnan(raw[8:10, 8:10]).all()  # packed apart
    assert mirror_lower_blocks(path) == 3 + 3  # the lower blocks and the diagonal ones
    raw = xarray.open_zarr(path, consolidated=False)["ntk"].values
    np.testing.assert_array_equal(raw, kernel)
    assert not scan(KernelStore.open(path), symmetry=True).problems


def test_mirror_lower_blocks_needs_a_complete_store(tmp_path):
    path = str(tmp_path / "k.zarr")
    store, _ = StoreWriter.create_or_resume(path, _spec(8, 4))
    store.write_block(0, 1, {"ntk": np.zeros((4, 4, 2, 2, 3), np.float32)})
    with pytest.raises(IncompleteKernelError, match="missing 3 of 3 blocks"):
        mirror_lower_blocks(path)
    assert mirror_lower_blocks(str(_write(tmp_path / "v1.zarr", _symmetric(8), 4, 1).path)) == 0


# --- builds on Ray --------------------------------------------------------------------------


def _build(path, **kw):
    f, params = bm.mlp()
    settings = dict(kinds=("nngp", "ntk"), block_size=8, progress=False, **kw)
    return nt.build_kernel(f, params, bm.data(20), path=str(path), **settings)


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.xdist_group("ray")
def test_a_build_stores_format_3_and_resumes_and_verifies_format_1(tmp_path, capsys):
    path = tmp_path / "k.zarr"
    _build(path)  # symmetric 20 x 20, blocks of 8: grid 3 x 3, 6 blocks
    store = KernelStore.open(str(path))
    assert store.format == 3 and not (path / "ntk" / "c" / "2" / "0").exists()
    assert not (path / "ntk" / "c" / "1" / "1").exists()
    assert (path / "diagonal_ntk" / "c" / "1" / "0").exists()  # block (1, 1), packed
    f, params = bm.mlp()
    want = dict(
        zip(("nngp", "ntk"), nt.empirical_kernel_fn(f)(bm.data(20), None, ("nngp", "ntk"), params))
    )
    v2 = {k: open_kernel(str(path), k).compute() for k in ("nngp", "ntk")}
    for kind, got in v2.items():
        np.testing.assert_array_equal(got, got.T)
        np.testing.assert_allclose(got, want[kind], rtol=2e-5, atol=2e-5 * np.abs(got).max())

    as_format_1(path)  # the same kernel, as format 1 wrote it: every mirror on disk
    mirror = path / "ntk" / "c" / "2" / "0"
    assert mirror.exists()
    for kind, got in v2.items():
        np.testing.assert_array_equal(KernelStore.open(str(path)).array(kind)[...], got)
    assert main(["verify", str(path)]) == 0
    assert "mirrors exactly transposed" in capsys.readouterr().out
    (path / "ntk" / "c" / "0" / "2").unlink()  # block (0, 2), not its mirror
    mirror.unlink()
    assert main(["verify", str(path), "--checksums"]) == 1
    out = capsys.readouterr().out
    assert "FAIL block (0, 2) ntk: missing: chunk (0, 2) of ntk is missing" in out
    repaired = _build(path, repair=True)  # a resumed format 1 build writes mirrors
    assert (repaired.computed, repaired.skipped) == (1, 5)
    assert KernelStore.open(str(path)).format == 1 and mirror.exists()
    for kind, got in v2.items():
        np.testing.assert_array_equal(KernelStore.open(str(path)).array(kind)[...], got)
        np.testing.assert_array_equal(open_kernel(str(path), kind).compute(), got)
    assert main(["verify", str(path), "--checksums"]) == 0

    as_format(path, 2)  # a format 2 store resumes as format 2: whole diagonal blocks
    (path / "ntk" / "c" / "1" / "1").unlink()
    assert main(["verify", str(path), "--checksums"]) == 1
    repaired = _build(path, repair=True)
    assert (repaired.computed, repaired.skipped) == (1, 5)
    store = KernelStore.open(str(path))
    assert store.format == 2 and not store.packed and (path / "ntk" / "c" / "1" / "1").exists()
    assert not (path / "diagonal_ntk").exists()
    for kind, got in v2.items():
        np.testing.assert_array_equal(open_kernel(str(path), kind).compute(), got)
    assert main(["verify", str(path), "--checksums"]) == 0
