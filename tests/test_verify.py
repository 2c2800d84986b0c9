"""``bigntk verify STORE | CONFIG`` (bigntk/_cli/verify.py, bigntk/build/_verify.py) and the
float64 reference kernels (bigntk/empirical/_reference.py)."""

import pathlib
import shutil

import jax
import numpy as np
import pytest
import yaml

import bigntk as nt
from bigntk.build._verify import choose_method
from bigntk.cli import main
from bigntk.config import load_config
from bigntk.store import KernelStore, StoreWriter, checksum
from tests import models
from tests.oracle import oracle
from tests.test_format_v2 import as_format, as_format_1

pytestmark = pytest.mark.xdist_group("ray")

CONFIG = {
    "model": {
        "stax": [["Conv", [3, [3, 3]], {"padding": "SAME"}], "Relu", "Flatten", ["Dense", 4]]
    },
    "data": {"x1": {"builtin": "digits", "split": "train", "n": 24}},
    "kernel": {"kinds": ["ntk", "nngp"], "implementation": "jacobian_contraction"},
    "tiling": {"block_size": 8},  # a 3 x 3 grid, 6 blocks
}


# --- the reference -------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(models.ALL))
@pytest.mark.parametrize("axes", [((-1,), ()), ((), (0,))])
def test_reference_kernels_match_the_tests_oracle(model, axes):
    f, params, x1, x2 = models.ALL[model]()
    if 0 in axes[1]:
        x2 = jax.tree.map(lambda a: a[::-1] * 0.5, x1)
    got = nt.empirical.reference_kernels(f, params, x1, x2, ("nngp", "ntk"), *axes)
    nngp, ntk = oracle(f, params, x1, x2, *axes)
    for kind, want in (("nngp", nngp), ("ntk", ntk)):
        leaves = jax.tree.leaves(got[kind])
        assert len(leaves) == len(want) and all(g.dtype == np.float64 for g in leaves)
        for g, w in zip(leaves, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


# --- the command, on a real build ----------------------------------------------------------


@pytest.fixture(scope="module")
def built(ray_cluster, tmp_path_factory):
    """A symmetric 24 x 24 NTK and NNGP store built on Ray from a config (copied per test)."""
    root = tmp_path_factory.mktemp("verify")
    config = root / "c.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "output": {"path": str(root / "k.zarr")}}))
    assert main(["build", str(config), "--no-progress"]) == 0
    return root / "k.zarr"


@pytest.fixture
def store(built, tmp_path):
    """``(store path, config path)``: a fresh copy of the built store, and its config."""
    path = tmp_path / "k.zarr"
    shutil.copytree(built, path)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "output": {"path": str(path)}}))
    return str(path), str(config)


def _rewrite(path, bi, bj, values):
    """Write block (bi, bj) through the store API, recording its checksums."""
    store = StoreWriter.open(path)
    sums = store.write_block(bi, bj, values)
    store.checksums.record((bi, bj), sums)
    store.checksums.flush(np.array([[bi, bj]]))


def test_verify_store_runs_the_store_checks(store, capsys):
    path, _ = store
    assert main(["verify", path]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"bigntk verify: {path} (6/6 blocks committed); store checks only")
    assert "ok   committed blocks reread: 6 blocks x 2 kinds" in out
    assert "each pair of examples stored once (exactly symmetric by construction)" in out
    assert "principal submatrix is PSD" in out
    assert out.strip().splitlines()[-1].startswith("PASS: ")
    assert main(["verify", path, "--tolerance", "0.1"]) == 2  # needs the config
    assert "--tolerance needs the build config" in capsys.readouterr().err


def _flip_a_byte(path: str, chunk: str) -> None:
    """Damage one chunk file of the store in place (one byte in its middle)."""
    file = pathlib.Path(path) / chunk
    raw = bytearray(file.read_bytes())
    raw[len(raw) // 2] ^= 0x5A
    file.write_bytes(bytes(raw))


def test_verify_store_names_a_damaged_chunk(store, capsys):
    path, _ = store
    _flip_a_byte(path, "ntk/c/0/1")
    assert main(["verify", path]) == 1
    out = capsys.readouterr().out
    assert "FAIL block (0, 1) ntk unreadable: chunk (0, 1) of ntk cannot be read" in out
    assert "checksum do not match" in out  # the chunk's CRC32C (format 2)
    assert "FAIL committed blocks reread: 1 of 6 committed blocks are damaged" in out
    assert out.strip().splitlines()[-1].startswith("FAIL: ")


def test_verify_store_names_a_damaged_chunk_of_format_1(store, capsys):
    path, _ = store
    as_format_1(path)  # no CRC32C in the chunks: the recorded checksum finds it
    _flip_a_byte(path, "ntk/c/0/1")
    assert main(["verify", path]) == 1
    out = capsys.readouterr().out
    assert "FAIL block (0, 1) ntk differs: ntk checksum" in out
    assert "FAIL committed blocks reread: 1 of 6 committed blocks are damaged" in out
    assert out.strip().splitlines()[-1].startswith("FAIL: ")


def _record(kernel, block, ntk_parts):
    """Record a ntk checksum that agrees with ``ntk_parts`` (nngp's unchanged)."""
    sums = {"ntk": checksum(*ntk_parts, dtype=kernel.array("ntk").dtype)}
    sums["nngp"] = int(kernel.checksums.grids()["nngp"][block])
    kernel.checksums.record(block, sums)
    kernel.checksums.flush(np.array([block]))


def test_verify_store_names_an_asymmetric_block(store, capsys):
    path, _ = store
    kernel = as_format(path, 2)  # format 3 packs a diagonal block: it cannot be asymmetric
    ntk = kernel.array("ntk")
    diagonal = ntk[8:16, 8:16]  # block (1, 1): format 2 keeps it exactly symmetric
    diagonal[3, 5] *= 1.5
    ntk[8:16, 8:16] = diagonal
    _record(kernel, (1, 1), (diagonal,))  # and a checksum that agrees with it
    assert main(["verify", path, "--checksums"]) == 0  # the checksums cannot see it
    capsys.readouterr()
    assert main(["verify", path]) == 1
    out = capsys.readouterr().out
    assert "FAIL block (1, 1) ntk asymmetric: 2 ntk values differ from its own transpose" in out


def test_verify_store_of_format_1_names_an_asymmetric_block(store, capsys):
    path, _ = store
    kernel = as_format_1(path)
    ntk = kernel.array("ntk")
    mirror = ntk[16:24, 0:8]  # the mirror of block (0, 2)
    mirror[3, 5] *= 1.5
    ntk[16:24, 0:8] = mirror
    _record(kernel, (0, 2), (ntk[0:8, 16:24], ntk[16:24, 0:8]))  # a checksum that agrees
    assert main(["verify", path, "--checksums"]) == 0  # the checksums cannot see it
    capsys.readouterr()
    assert main(["verify", path]) == 1
    out = capsys.readouterr().out
    assert "mirrors exactly transposed" not in out
    assert "FAIL block (0, 2) ntk asymmetric: 1 ntk values differ from the transpose" in out


def test_verify_config_recomputes_with_another_method(store, capsys):
    path, config = store
    assert main(["verify", config, "--blocks", "2"]) == 0
    out = capsys.readouterr().out
    assert "recomputing entries of 2 blocks by the float64 reference (jax.jacobian" in out
    assert "(the store was built by JACOBIAN_CONTRACTION)" in out
    assert out.count("recomputed: 4x4 entries by the float64 reference") == 4  # 2 blocks x 2 kinds
    assert "(tolerance 0.0001)" in out and "ok   config matches the store" in out
    assert "FAIL" not in out
    argv = ["verify", config, "--blocks", "1", "--implementation", "structured_derivatives"]
    assert main(argv) == 0
    assert "by STRUCTURED_DERIVATIVES in float64" in capsys.readouterr().out
    # the store hashed every row; a config hashing 64 rows describes another build
    assert main(["verify", config, "--set", "data.fingerprint=sample"]) == 1
    assert "FAIL config matches the store: " in (out := capsys.readouterr().out)
    assert out.rstrip().endswith("checks passed") and "differs in: x1" in out
    assert main(["verify", config, "--implementation", "jacobian_contraction"]) == 2
    assert "another method than the one that built the store" in capsys.readouterr().err
    # where the reference's Jacobians would be too big: an implementation without Jacobians
    loaded = load_config(config)
    x1, _ = loaded.load_data()
    f, params = loaded.load_model(x1.shape[1:])
    kernel = KernelStore.open(path)
    for rows, method in ((4, "reference"), (10**7, nt.NtkImplementation.NTK_VECTOR_PRODUCTS)):
        assert choose_method(kernel, None, f, params, x1.read(0, 1), rows) == method


def test_verify_config_catches_wrong_but_consistent_values(store, capsys):
    path, config = store
    kernel = KernelStore.open(path)
    ntk, nngp = kernel.values("ntk")[0:8, 0:8], kernel.values("nngp")[0:8, 0:8]
    # a diagonal block shifted by a constant: still exactly symmetric, the whole kernel still
    # PSD (plus a rank-one PSD term), checksums recorded: only a recomputation can tell
    _rewrite(path, 0, 0, {"ntk": ntk + 0.05 * np.abs(ntk).max(), "nngp": nngp})
    assert main(["verify", path, "--blocks", "6"]) == 0
    capsys.readouterr()
    assert main(["verify", config, "--blocks", "6"]) == 1
    out = capsys.readouterr().out
    assert "FAIL block (0, 0) ntk recomputed: 4x4 entries by the float64 reference" in out
    assert "ok   block (0, 0) nngp recomputed" in out and "ok   block (0, 1) ntk recomputed" in out
    assert out.count("FAIL") == 2  # the block, and the summary
    assert main(["verify", config, "--blocks", "6", "--tolerance", "0.1"]) == 0
    assert "(tolerance 0.1)" in capsys.readouterr().out
