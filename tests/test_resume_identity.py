"""A store is resumed only by the very same computation; nothing else at its path is touched.

Real Ray, real Zarr on disk. Each refusal below resumed silently (or deleted a
user's folder) before builds were identified by what they run.
"""

import hashlib
import json
import re

import jax
import numpy as np
import pytest
import yaml
import zarr

import bigntk as nt
from bigntk import stax
from bigntk.cli import main
from bigntk.errors import BlockFailedError, BuildInputError, NotAStoreError, SpecMismatchError
from bigntk.store import KernelStore, spec_hash
from tests import builder_models as bm

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.xdist_group("ray")]

BUILD = dict(block_size=8, progress=False, implementation=1)


def _stax(*layers):
    init_fn, f, _ = stax.serial(*layers)
    _, params = init_fn(jax.random.PRNGKey(0), (-1, 5))
    return f, jax.tree.map(lambda p: np.asarray(p, np.float32), params)


def test_a_changed_model_with_the_same_parameters_is_refused(tmp_path):
    path = str(tmp_path / "k.zarr")
    f, params = _stax(stax.Dense(16), stax.Relu(), stax.Dense(2))
    x = bm.data(12)
    nt.build_kernel(f, params, x, path=path, **BUILD)
    before = nt.open_kernel(path).compute()
    # every stax.serial network shares one apply function; same parameter values
    for layers in [
        (stax.Dense(16), stax.Erf(), stax.Dense(2)),
        (stax.Dense(16, W_std=1.5), stax.Relu(), stax.Dense(2)),
    ]:
        other, same_params = _stax(*layers)
        with pytest.raises(SpecMismatchError, match="another model: its program"):
            nt.build_kernel(other, same_params, x, path=path, **BUILD)
    two = lambda p, x: 2.0 * jax.numpy.tanh(x @ p[0]) @ p[1]  # noqa: E731
    three = lambda p, x: 3.0 * jax.numpy.tanh(x @ p[0]) @ p[1]  # noqa: E731
    p = bm.slow_mlp_params()
    nt.build_kernel(two, p, x, path=str(tmp_path / "c.zarr"), **BUILD)
    with pytest.raises(SpecMismatchError, match="another model"):
        nt.build_kernel(three, p, x, path=str(tmp_path / "c.zarr"), **BUILD)
    np.testing.assert_array_equal(nt.open_kernel(path).compute(), before)


def test_one_edited_data_row_is_refused_and_spelling_does_not_matter(tmp_path):
    path = str(tmp_path / "k.zarr")
    f, params = bm.mlp()
    x = bm.data(100)
    first = nt.build_kernel(f, params, x, path=path, kinds=("ntk", "nngp"), trace_axes=(-1,),
                            **BUILD)  # fmt: skip
    edited = x.copy()
    edited[37, 2] += 0.5  # not one of the 64 rows the old fingerprint sampled
    with pytest.raises(SpecMismatchError, match="x1: stored"):
        nt.build_kernel(f, params, edited, path=path, kinds=("ntk", "nngp"), **BUILD)
    # the same computation spelled differently resumes: nothing to compute
    again = nt.build_kernel(f, params, x, path=path, kinds=["nngp", "ntk"], trace_axes=[1],
                            vmap_axes=0, **BUILD)  # fmt: skip
    assert (again.computed, again.skipped) == (0, first.total)
    # the opt-out hashes 64 rows: an edit elsewhere is its documented blind spot
    many = bm.data(300)
    sampled_rows = set(np.linspace(0, 299, 62).astype(int).tolist())
    row = next(r for r in range(4, 300) if r not in sampled_rows)  # the probe reads 0-3
    unseen = many.copy()
    unseen[row, 0] += 0.5
    sampled, one_block = str(tmp_path / "s.zarr"), dict(BUILD, block_size=300)
    nt.build_kernel(f, params, many, path=sampled, data_fingerprint="sample", **one_block)
    blind = nt.build_kernel(f, params, unseen, path=sampled, data_fingerprint="sample",
                            **one_block)  # fmt: skip
    assert blind.computed == 0
    with pytest.raises(SpecMismatchError, match="x1: stored"):  # the default sees it
        nt.build_kernel(f, params, unseen, path=sampled, **one_block)


def _tree(root):
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_overwrite_replaces_only_a_bigntk_store(tmp_path):
    f, params = bm.mlp()
    x = bm.data(8)
    mine = tmp_path / "thesis"
    (mine / "chapters").mkdir(parents=True)
    (mine / "chapters" / "one.tex").write_text("precious")
    (mine / "data.npy").write_bytes(b"\x93NUMPY not really")
    before = _tree(mine)
    for overwrite in (False, True):
        with pytest.raises(NotAStoreError, match="not a bigntk kernel store"):
            nt.build_kernel(f, params, x, path=str(mine), overwrite=overwrite, **BUILD)
        assert _tree(mine) == before
    # a store with a user's file beside its arrays: the file is not the store's to delete
    path = tmp_path / "k.zarr"
    nt.build_kernel(f, params, x, path=str(path), **BUILD)
    (path / "notes.txt").write_text("mine")
    with pytest.raises(NotAStoreError, match=r"other entries \(notes.txt\)"):
        nt.build_kernel(f, params, 2 * x, path=str(path), overwrite=True, **BUILD)
    assert (path / "notes.txt").read_text() == "mine"
    (path / "notes.txt").unlink()
    r = nt.build_kernel(f, params, 2 * x, path=str(path), overwrite=True, **BUILD)
    assert r.computed == r.total
    assert not list(path.rglob("*bigntk.lease*"))  # the lease is gone with the build


def test_a_model_mixing_examples_is_refused_unless_asserted(tmp_path):
    params = bm.slow_mlp_params()
    x = bm.data(12)
    with pytest.raises(BuildInputError, match="could not prove") as e:
        nt.build_kernel(bm.batch_centred_fn, params, x, path=str(tmp_path / "k.zarr"), **BUILD)
    assert "vmap_axes=0" in str(e.value)
    assert not (tmp_path / "k.zarr").exists()
    # the default proves a model that does not mix, with the same spec as asserting it
    f, p = bm.mlp()
    nt.build_kernel(f, p, x, path=str(tmp_path / "m.zarr"), **BUILD)
    r = nt.build_kernel(f, p, x, path=str(tmp_path / "m.zarr"), vmap_axes=0, **BUILD)
    assert r.computed == 0


def test_the_probe_catches_what_the_program_text_cannot_see(tmp_path):
    path = str(tmp_path / "k.zarr")
    params = bm.slow_mlp_params()
    x = bm.data(12)
    nt.build_kernel(bm.host_scaled_mlp(1.0), params, x, path=path, vmap_axes=0, **BUILD)
    assert set(KernelStore.open(path).meta["probe"]["values"]) == {"ntk"}
    # a host callback's arguments are opaque to JAX: same spec, other values
    with pytest.raises(SpecMismatchError, match="holds other values"):
        nt.build_kernel(bm.host_scaled_mlp(2.0), params, x, path=path, vmap_axes=0, **BUILD)
    r = nt.build_kernel(bm.host_scaled_mlp(1.0), params, x, path=path, vmap_axes=0, **BUILD)
    assert r.computed == 0


def _pretend_made_by_another_jax(path, scale_probe=1.0):
    group = zarr.open_group(path, mode="r+")
    meta = dict(group.attrs)["bigntk"]
    meta["versions"]["jax"] = "0.4.23"
    meta["spec"]["model"]["program"] = hashlib.sha256(b"as jax 0.4.23 printed it").hexdigest()[:16]
    meta["spec_hash"] = spec_hash(meta["spec"])
    meta["probe"]["values"] = {
        k: [v * scale_probe for v in vals] for k, vals in meta["probe"]["values"].items()
    }
    group.attrs["bigntk"] = json.loads(json.dumps(meta))


def test_a_jax_upgrade_resumes_only_when_the_probe_agrees_and_is_recorded(tmp_path, capsys):
    f, params = bm.mlp()
    x = bm.data(24)
    path = str(tmp_path / "k.zarr")
    nt.build_kernel(f, params, x, path=path, **BUILD)
    want = nt.open_kernel(path).compute()
    _pretend_made_by_another_jax(path)
    r = nt.build_kernel(f, params, x, path=path, **BUILD)
    assert r.computed == 0
    meta = KernelStore.open(path).meta
    (change,) = meta["version_changes"]
    assert change["versions"]["jax"] == {"stored": "0.4.23", "now": jax.__version__}
    assert change["program_changed"] and change["probe_max_rel_diff"] < 1e-6
    assert meta["versions"]["jax"] == jax.__version__
    np.testing.assert_array_equal(nt.open_kernel(path).compute(), want)
    assert main(["info", path]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["version_changes"][0]["versions"]["jax"]["stored"] == "0.4.23"
    assert shown["probe"] == {"ntk": "16 entries (float64)"}
    # the probe disagrees: the old JAX computed something else
    _pretend_made_by_another_jax(path, scale_probe=1.5)
    with pytest.raises(SpecMismatchError, match=r"jax 0.4.23 -> "):
        nt.build_kernel(f, params, x, path=path, **BUILD)


def test_a_block_that_kills_its_worker_ends_the_build(tmp_path):
    params = bm.slow_mlp_params()
    x1, x2 = bm.data(32), bm.data(8, seed=1)
    x1[29, 3] = bm.KILL_SENTINEL  # only block (3, 0) reads row 29 (the probe reads rows 0-3)
    path = str(tmp_path / "k.zarr")
    with pytest.raises(BuildInputError, match="max_worker_deaths must be a positive int"):
        nt.build_kernel(bm.killing_mlp_fn, params, x1, x2, path=path, max_worker_deaths=0)
    with pytest.raises(BlockFailedError, match=r"Block \(3, 0\) killed its worker 2 times") as e:
        nt.build_kernel(bm.killing_mlp_fn, params, x1, x2, path=path, vmap_axes=0,
                        max_worker_deaths=2, workers=1, **BUILD)  # fmt: skip
    assert re.search(r"worker pid \d+ on \S+; SYSTEM_ERROR", str(e.value)), str(e.value)
    done = KernelStore.open(path).committed()
    assert not done[3, 0] and done.sum() >= 1  # what was committed is kept
    want = nt.empirical_ntk_fn(bm.killing_mlp_fn, vmap_axes=0, implementation=1)(x1[:8], x2, params)
    np.testing.assert_allclose(nt.open_kernel(path, allow_incomplete=True)[:8].compute(), want,
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_block_size_none_resumes_with_the_stores_tiling(tmp_path):
    """The default block size depends on the machine; a store keeps its own."""
    f, params = bm.mlp()
    x = bm.data(20)
    path = str(tmp_path / "k.zarr")
    first = nt.build_kernel(f, params, x, path=path, block_size=4, progress=False)
    again = nt.build_kernel(f, params, x, path=path, block_size=None, progress=False)
    assert (again.computed, again.skipped) == (0, first.total)
    with pytest.raises(SpecMismatchError, match="layout.block: stored 4, requested 8"):
        nt.build_kernel(f, params, x, path=path, block_size=8, progress=False)


def test_a_complete_store_answers_without_ray(tmp_path):
    from tests import faults

    path = str(tmp_path / "k.zarr")
    first = faults.build(path)
    # a fresh driver told to use a Ray that does not exist (it would hang trying to reach
    # it, as an incomplete build's driver does): a complete store never needs one
    out = faults.run_driver(path, address="127.0.0.1:1", timeout=120)
    assert out == {"computed": 0, "skipped": first.total, "total": first.total}, out
