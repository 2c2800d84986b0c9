"""Per-block checksums, ``bigntk verify --checksums`` and repair (bigntk/store/_checksum.py)."""

import pathlib
import shutil

import numpy as np
import pytest
import yaml

import bigntk as nt
from bigntk.cli import main
from bigntk.store import KernelStore, StoreWriter
from bigntk.store._checksum import NONE, PREFIX, checksum, scan
from tests import builder_models as bm
from tests.test_format_v2 import as_format_1

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.xdist_group("ray")]


def _chunk(path, kind, bi, bj):
    """The chunk file of block (bi, bj) (format 3: a diagonal block's packed one)."""
    if bi == bj and (pathlib.Path(path) / ("diagonal_" + kind)).exists():
        return pathlib.Path(path) / ("diagonal_" + kind) / "c" / str(bi) / "0"
    return pathlib.Path(path) / kind / "c" / str(bi) / str(bj)


def _build(path, **kw):
    f, params = bm.mlp()
    settings = dict(kinds=("nngp", "ntk"), block_size=8, progress=False, **kw)
    return nt.build_kernel(f, params, bm.data(20), path=str(path), **settings)


def _kernels(path):
    return {k: nt.open_kernel(str(path), k).compute() for k in ("nngp", "ntk")}


def test_checksum_is_of_the_stored_bytes():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    assert checksum(a) == checksum(np.asfortranarray(a)) == checksum(a.astype(">f8"))
    assert checksum(a, dtype=np.float32) == checksum(a.astype(np.float32)) != checksum(a)
    assert checksum(a, a.T) != checksum(a.T, a)


def test_damaged_blocks_are_found_and_repaired_bit_for_bit(tmp_path, capsys):
    path = tmp_path / "k.zarr"
    _build(path)  # symmetric 20 x 20, blocks of 8: grid 3 x 3, 6 blocks
    store = KernelStore.open(str(path))
    sums = store.checksums.grids()
    assert all((sums[k][store.plan.mask()] != NONE).all() for k in store.kinds)
    assert all((sums[k][~store.plan.mask()] == NONE).all() for k in store.kinds)
    clean = _kernels(path)
    assert main(["verify", str(path), "--checksums"]) == 0
    assert "PASS: all 6 committed blocks" in capsys.readouterr().out

    flipped = _chunk(path, "ntk", 0, 1)  # flip bytes in the middle of a chunk file
    raw = bytearray(flipped.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 3] = bytes(b ^ 0x5A for b in raw[len(raw) // 2 :][:3])
    flipped.write_bytes(bytes(raw))
    _chunk(path, "nngp", 1, 1).unlink()  # delete a chunk file
    upper = _chunk(path, "ntk", 0, 2)  # truncate the chunk of block (0, 2)
    upper.write_bytes(upper.read_bytes()[:37])
    ntk = StoreWriter.open(str(path)).array("ntk")  # rewrite a chunk whole, CRC32C and all
    ntk[8:16, 16:20] = ntk[8:16, 16:20] * np.float32(1.5)
    (pathlib.Path(path) / "ntk" / "c" / "0" / "0.abc123.partial").write_bytes(b"stale")

    found = {(p.block, p.kind, p.what) for p in scan(KernelStore.open(str(path))).problems}
    assert found == {((0, 1), "ntk", "unreadable"), ((1, 1), "nngp", "missing"),
                     ((0, 2), "ntk", "unreadable"), ((1, 2), "ntk", "differs")}  # fmt: skip
    assert main(["verify", str(path), "--checksums"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: 4 of 6 committed blocks are damaged" in out and "--repair" in out
    assert "checksum do not match" in out  # the chunk's own CRC32C

    again = _build(path)  # a plain resume trusts the manifest
    assert again.computed == 0
    repaired = _build(path, repair=True)
    assert (repaired.computed, repaired.skipped) == (4, 2)
    for kind, want in clean.items():
        np.testing.assert_array_equal(_kernels(path)[kind], want)  # bit for bit
    assert not scan(KernelStore.open(str(path))).problems
    assert not list(pathlib.Path(path).rglob("*.partial"))


def test_format_1_damaged_blocks_and_mirrors_are_found_and_repaired(tmp_path, capsys):
    path = tmp_path / "k.zarr"
    _build(path)
    clean = _kernels(path)
    as_format_1(path)  # mirrors on disk, no CRC32C in the chunks
    flipped = _chunk(path, "ntk", 0, 1)  # flip bytes in the middle of a chunk file
    raw = bytearray(flipped.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 3] = bytes(b ^ 0x5A for b in raw[len(raw) // 2 :][:3])
    flipped.write_bytes(bytes(raw))
    _chunk(path, "nngp", 1, 1).unlink()  # delete a chunk file
    mirror = _chunk(path, "ntk", 2, 0)  # truncate the mirror chunk of block (0, 2)
    mirror.write_bytes(mirror.read_bytes()[:37])

    found = {(p.block, p.kind, p.what) for p in scan(KernelStore.open(str(path))).problems}
    assert found == {((0, 1), "ntk", "differs"), ((1, 1), "nngp", "missing"),
                     ((0, 2), "ntk", "unreadable")}  # fmt: skip
    assert main(["verify", str(path), "--checksums"]) == 1
    assert "FAIL: 3 of 6 committed blocks are damaged" in capsys.readouterr().out
    repaired = _build(path, repair=True)
    assert (repaired.computed, repaired.skipped) == (3, 3)
    store = KernelStore.open(str(path))
    assert store.format == 1
    for kind, want in clean.items():
        np.testing.assert_array_equal(store.array(kind)[...], want)  # mirrors rewritten too
    assert not scan(store).problems


def test_nonfinite_values_are_reported(tmp_path):
    path = tmp_path / "k.zarr"
    _build(path)
    store = StoreWriter.open(str(path))
    store.array("ntk")[3, 9] = np.nan  # in block (0, 1)
    store.array("ntk")[19, 9] = 1.0  # block (2, 1): not stored in format 2, not checked
    (problem,) = scan(store).problems
    assert (problem.block, problem.kind, problem.what) == ((0, 1), "ntk", "nonfinite")


def test_format_1_nonfinite_values_in_a_mirror_are_reported(tmp_path):
    path = tmp_path / "k.zarr"
    _build(path)
    store = as_format_1(path)
    store.array("ntk")[9, 3] = np.nan  # block (1, 0)'s mirror region: block (0, 1)
    (problem,) = scan(store).problems
    assert (problem.block, problem.kind, problem.what) == ((0, 1), "ntk", "nonfinite")


def test_stores_without_checksum_arrays_still_open_resume_and_verify(tmp_path, capsys):
    path = tmp_path / "k.zarr"
    _build(path)
    for kind in ("nngp", "ntk"):  # a store written before checksums existed
        shutil.rmtree(pathlib.Path(path) / (PREFIX + kind))
    _chunk(path, "ntk", 0, 0).unlink()
    store = KernelStore.open(str(path))
    result = scan(store)
    assert result.without_checksum == 12
    assert [(p.block, p.what) for p in result.problems] == [((0, 0), "missing")]
    assert main(["verify", str(path), "--checksums"]) == 1
    assert "no recorded checksum" in capsys.readouterr().out
    repaired = _build(path, repair=True)  # recomputes (0, 0) and records its checksums
    assert repaired.computed == 1
    sums = KernelStore.open(str(path)).checksums.grids()
    assert sums["ntk"][0, 0] != NONE and sums["ntk"][0, 1] == NONE


def test_cli_build_repair_and_verify_from_the_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = {
        "model": {"stax": [["Dense", 8], "Relu", ["Dense", 2]]},
        "data": {"x1": {"builtin": "synthetic", "shape": [12, 3], "seed": 1}},
        "kernel": {"kinds": ["ntk"]},
        "tiling": {"block_size": 4},
        "output": {"path": "k.zarr"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["build", "c.yaml", "--no-progress"]) == 0
    clean = nt.open_kernel("k.zarr").compute()
    _chunk("k.zarr", "ntk", 1, 2).unlink()
    assert main(["verify", "c.yaml", "--checksums"]) == 1
    assert main(["build", "c.yaml", "--no-progress", "--repair"]) == 0
    assert "1 blocks computed, 5 resumed" in capsys.readouterr().out
    np.testing.assert_array_equal(nt.open_kernel("k.zarr").compute(), clean)
    assert main(["verify", "c.yaml", "--checksums"]) == 0
