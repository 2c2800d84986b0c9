"""The plan and the kernel store, without Ray."""

import numpy as np
import pytest
import zarr

from bigntk.errors import NotAStoreError, SpecMismatchError
from bigntk.store import KernelStore, Plan, StoreWriter, mirror_permutation, remove_partial_files


def test_plan_counts_and_pending():
    rect = Plan(10, 7, 4)
    assert rect.grid == (3, 2) and rect.num_blocks == 6
    assert rect.rows(2) == (8, 10) and rect.cols(1) == (4, 7)
    sym = Plan(10, 10, 4, symmetric=True)
    assert sym.num_blocks == 6 == sym.mask().sum()
    assert all(i <= j for i, j in sym.pending(np.zeros(sym.grid, bool)))
    diag = Plan(10, 10, 4, diagonal=True)
    assert diag.num_blocks == 3 and diag.pending(np.eye(3, dtype=bool)).size == 0
    done = np.zeros(rect.grid, bool)
    done[1, 1] = True
    assert (1, 1) not in map(tuple, rect.pending(done)) and len(rect.pending(done)) == 5


def test_plan_at_a_million_examples():
    plan = Plan(10**6, 10**6, 2048, symmetric=True)
    assert plan.grid == (489, 489)
    assert plan.num_blocks == 489 * 490 // 2 == len(plan.pending(np.zeros(plan.grid, bool)))


def test_plan_errors():
    with pytest.raises(ValueError, match="positive"):
        Plan(4, 4, 0)
    with pytest.raises(ValueError, match="n1 == n2"):
        Plan(4, 5, 2, symmetric=True)


def _spec(n=10, block=4, symmetric=True, out=(), dims=("x1", "x2"), **extra):
    layout = {"n1": n, "n2": n, "block": block, "symmetric": symmetric, "diagonal": False,
              "dims": list(dims), "out_shape": list(out), "dtype": "float32"}  # fmt: skip
    return {"kinds": ["ntk"], "layout": layout, "model": "m", "x1": "a", "x2": None, **extra}


def test_create_resume_refuse_overwrite(tmp_path):
    path = str(tmp_path / "k.zarr")
    store, resumed = StoreWriter.create_or_resume(path, _spec())
    assert not resumed and store.array("ntk").shape == (10, 10)
    assert np.isnan(store.array("ntk")[...]).all()
    again, resumed = StoreWriter.create_or_resume(path, _spec())
    assert resumed and again.spec_hash == store.spec_hash
    with pytest.raises(SpecMismatchError, match="model: stored 'm', requested 'other'"):
        StoreWriter.create_or_resume(path, _spec(model="other"))
    _, resumed = StoreWriter.create_or_resume(path, _spec(model="other"), overwrite=True)
    assert not resumed


def test_write_block_stores_a_symmetric_block_once(tmp_path):
    dims = ("x1", "x2", "out1_1", "out1_2")
    store, _ = StoreWriter.create_or_resume(str(tmp_path / "k.zarr"), _spec(out=(2, 2), dims=dims))
    assert store.format == 3 and not store.mirrored and store.packed
    block = np.arange(4 * 2 * 2 * 2, dtype=np.float32).reshape(4, 2, 2, 2)  # rows 0:4, cols 8:10
    store.write_block(0, 2, {"ntk": block})
    arr = store.array("ntk")
    np.testing.assert_array_equal(arr[0:4, 8:10], block)
    assert np.isnan(arr[8:10, 0:4]).all()  # the mirror is not written ...
    assert not (tmp_path / "k.zarr" / "ntk" / "c" / "2" / "0").exists()
    values = store.values("ntk")  # ... but read as the transpose
    np.testing.assert_array_equal(values[8:10, 0:4], block.transpose(1, 0, 3, 2))
    np.testing.assert_array_equal(values[0:4, 8:10], block)
    sym = store.symmetrize(np.random.default_rng(0).standard_normal((4, 4, 2, 2)))
    np.testing.assert_array_equal(sym, sym.transpose(1, 0, 3, 2))
    store.write_block(1, 1, {"ntk": sym.astype(np.float32)})  # format 3: packed, apart
    assert np.isnan(arr[4:8, 4:8]).all()
    assert not (tmp_path / "k.zarr" / "ntk" / "c" / "1" / "1").exists()
    assert store.packed_array("ntk").shape == (3, 4 * 5 // 2, 2, 2)  # (grid, pairs, *out)
    np.testing.assert_array_equal(values[4:8, 4:8], sym.astype(np.float32))


def test_format_1_write_block_writes_the_transposed_mirror(tmp_path):
    dims = ("x1", "x2", "out1_1", "out1_2")
    path, spec = str(tmp_path / "k.zarr"), _spec(out=(2, 2), dims=dims)
    store, _ = StoreWriter.create_or_resume(path, spec, format_version=1)
    assert store.format == 1 and store.mirrored
    block = np.arange(4 * 2 * 2 * 2, dtype=np.float32).reshape(4, 2, 2, 2)  # rows 0:4, cols 8:10
    store.write_block(0, 2, {"ntk": block})
    arr = store.array("ntk")
    np.testing.assert_array_equal(arr[0:4, 8:10], block)
    np.testing.assert_array_equal(arr[8:10, 0:4], block.transpose(1, 0, 3, 2))
    assert store.values("ntk") is arr  # format 1: the mirrors are on disk
    again, resumed = StoreWriter.create_or_resume(path, spec)  # a resume keeps format 1
    assert resumed and again.format == 1 and again.mirrored
    with pytest.raises(ValueError, match="format_version must be one of"):
        StoreWriter.create_or_resume(str(tmp_path / "k4.zarr"), spec, format_version=4)


def test_mirror_permutation():
    assert mirror_permutation(["x1", "x2"]) == (1, 0)
    assert mirror_permutation(["x1", "x2", "out1", "out2_1", "out2_2"]) == (1, 0, 2, 4, 3)


def test_manifest_commit_rewrites_only_touched_chunks(tmp_path):
    spec = _spec(n=600 * 4, block=1, symmetric=False)
    store, _ = StoreWriter.create_or_resume(str(tmp_path / "k.zarr"), spec)
    assert store.committed().shape == (2400, 2400)
    done = np.zeros((2400, 2400), bool)
    done[3, 700] = done[1000, 5] = True
    store.commit(np.array([[3, 700], [1000, 5]]), done)
    np.testing.assert_array_equal(store.committed(), done)


def test_not_a_store_and_format_version(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotAStoreError):
        KernelStore.open(str(tmp_path / "f"))
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    with pytest.raises(NotAStoreError, match="no 'bigntk' attributes"):
        KernelStore.open(str(tmp_path / "g.zarr"))
    store, _ = StoreWriter.create_or_resume(str(tmp_path / "k.zarr"), _spec())
    store.update_meta(format=99)
    with pytest.raises(NotAStoreError, match="format 99"):
        KernelStore.open(str(tmp_path / "k.zarr"))
    del g
    with pytest.raises(FileNotFoundError):
        KernelStore.open(str(tmp_path / "missing.zarr"))


def test_orphan_partial_files_are_removed_on_resume(tmp_path):
    path = tmp_path / "k.zarr"
    StoreWriter.create_or_resume(str(path), _spec())
    orphan = path / "ntk" / "c" / "0" / "0.3f2a.partial"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"half a chunk")
    StoreWriter.create_or_resume(str(path), _spec())
    assert not orphan.exists()
    assert remove_partial_files(str(path)) == 0


def test_the_writer_api_moved_to_store_writer_with_a_warning(tmp_path):
    """Readers get a read-only KernelStore; the old writer entry points still work, warning."""
    path = str(tmp_path / "k.zarr")
    with pytest.warns(DeprecationWarning, match="StoreWriter.create_or_resume"):
        store, resumed = KernelStore.create_or_resume(path, _spec())
    assert isinstance(store, StoreWriter) and not resumed
    with pytest.warns(DeprecationWarning, match=r"StoreWriter.open\(path\)"):
        assert isinstance(KernelStore.open(path, mode="r+"), StoreWriter)
    reader = KernelStore.open(path)
    assert not isinstance(reader, StoreWriter) and not hasattr(reader, "write_block")
    with pytest.warns(DeprecationWarning, match="moved to bigntk.store.KernelStore"):
        from bigntk.build import KernelStore as old

    assert old is KernelStore
