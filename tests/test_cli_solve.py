"""``bigntk solve`` and ``bigntk spectrum`` on a built store, against dense NumPy/SciPy."""

import json

import numpy as np
import pytest
import scipy.linalg
import yaml

import bigntk as nt
from bigntk.cli import main
from bigntk.config import load_builtin
from bigntk.errors import ConfigError

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.xdist_group("ray")]

N = 96


@pytest.fixture(scope="module")
def built(tmp_path_factory, ray_cluster):
    """A symmetric NTK of a small MLP on 96 digits, built by `bigntk build`."""
    root = tmp_path_factory.mktemp("cli_solve")
    config = {
        "model": {"stax": [["Flatten"], ["Dense", 32], ["Relu"], ["Dense", 10]], "seed": 0},
        "data": {"x1": {"builtin": "digits", "split": "train", "n": N}},
        "kernel": {"kinds": ["ntk", "nngp"], "trace_axes": [-1]},
        "tiling": {"block_size": 32},
        "output": {"path": str(root / "k.zarr")},
    }
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["build", str(path), "--no-progress"]) == 0
    return path, root / "k.zarr"


def test_solve_writes_what_numpy_solves_and_the_store_still_resumes(built, capsys):
    config, store = built
    capsys.readouterr()
    assert main(["solve", str(config), "--workers", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "bigntk solve:" in out and "iterations" in out

    k = nt.open_kernel(str(store), "ntk").compute().astype(np.float64)
    _, labels = load_builtin("digits", "train", n=N)
    y = np.eye(10)[labels]
    lam = 1e-4 * np.mean(np.diag(k))  # --diag-reg is relative to the diagonal's mean
    want = scipy.linalg.solve(k + lam * np.eye(N), y, assume_a="pos")
    alpha = np.load(store / "solve" / "alpha.npy")
    np.testing.assert_allclose(k @ alpha + lam * alpha, y, atol=1e-5 * np.abs(y).max() * 10)
    np.testing.assert_allclose(alpha, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    np.testing.assert_allclose(np.load(store / "solve" / "fitted.npy"), k @ alpha, atol=1e-4)
    record = json.loads((store / "solve" / "fit.json").read_text())
    assert record["method"] == "cg" and record["converged"] and record["kind"] == "ntk"
    assert record["bytes_read"] > 0  # held by Ray actors: the store read once

    # the results live in <store>/solve/, which a later build of the same config accepts
    assert main(["build", str(config), "--no-progress"]) == 0
    assert "0 blocks computed" in capsys.readouterr().out


def test_spectrum_equals_numpy_eigh(built, capsys):
    _, store = built
    assert main(["spectrum", str(store), "-k", "5", "--kind", "nngp", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    k = nt.open_kernel(str(store), "nngp").compute().astype(np.float64)
    want = np.linalg.eigvalsh(k)[::-1][:5]
    got = np.load(store / "solve" / "spectrum.npz")["eigenvalues"]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert f"{want[0]:.3e}"[:4] in out


def test_solve_needs_targets_it_can_find(built, tmp_path, capsys):
    config, store = built
    raw = yaml.safe_load(config.read_text())
    raw["data"]["x1"] = {"builtin": "synthetic", "shape": [N, 8, 8, 1], "seed": 0}
    other = tmp_path / "synthetic.yaml"
    other.write_text(yaml.safe_dump(raw))
    assert main(["solve", str(other), "--dask"]) == 2
    assert "needs targets: pass --targets" in capsys.readouterr().err
    np.save(tmp_path / "y.npy", np.zeros(N + 1))
    assert main(["solve", str(config), "--targets", str(tmp_path / "y.npy"), "--dask"]) == 2
    assert f"{N + 1} rows for a kernel of {N} examples" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--kind ntk2"):
        from bigntk._cli.solve import _kind
        from bigntk.store import KernelStore

        _kind(KernelStore.open(str(store)), "ntk2")
