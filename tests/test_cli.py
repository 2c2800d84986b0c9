"""Build configs (bigntk/config/_load.py) and the ``bigntk`` command (bigntk/cli.py)."""

import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import yaml
import zarr

import bigntk as nt
from bigntk.build._verify import traced
from bigntk.cli import _print_error, main
from bigntk.config import apply_overrides, load_builtin, load_config, parse_config
from bigntk.errors import BigNTKError, BuildInputError, ConfigError
from bigntk.store import KernelStore, StoreWriter

ROOT = pathlib.Path(__file__).resolve().parent.parent

TINY = {
    "model": {
        "stax": [["Conv", [4, [3, 3]], {"padding": "SAME"}], "Relu", "Flatten", ["Dense", 10]],
        "seed": 0,
    },
    "data": {"x1": {"builtin": "digits", "split": "train", "n": 24}},
    "kernel": {"kinds": ["ntk", "nngp"]},
    "tiling": {"block_size": 8},
    "output": {"path": "k.zarr"},
}


def write_config(tmp_path, raw, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def with_changes(raw, **changes):
    """A copy of ``raw`` with ``{'a.b': value}`` set (``None`` deletes the key)."""
    raw = yaml.safe_load(yaml.safe_dump(raw))
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return raw


# --- configs -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits_ntk.yaml", "cifar_synthetic.yaml"])
def test_shipped_configs_are_valid(name):
    config = load_config(ROOT / "configs" / name)
    assert config.x2 is None and config.kernel["kinds"] == ("ntk",)
    assert config.path.endswith(".zarr") and pathlib.Path(config.path).is_absolute()


def test_defaults_and_normalised_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((3, 2), np.float32))
    config = parse_config(
        {"model": {"stax": ["Relu"]}, "data": {"x1": "x.npy"}, "output": {"path": "out/k.zarr"}}
    )
    assert config.kernel == {
        "kinds": ("ntk",),
        "trace_axes": (-1,),
        "diagonal_axes": (),
        "vmap_axes": None,  # prove batch independence (as empirical_kernel_fn)
        "implementation": 0,
    }
    assert config.data_fingerprint == "full"
    assert config.model["seed"] == 0 and config.block_size is None
    assert (config.address, config.workers, config.overwrite) == (None, None, False)
    # relative paths: against the current directory, not the config file's
    assert config.x1 == str(tmp_path / "x.npy")
    assert config.path == str(tmp_path / "out" / "k.zarr")
    kwargs = config.build_kwargs()
    assert kwargs["path"] == config.path and kwargs["trace_axes"] == (-1,)
    other = parse_config(
        with_changes(
            {
                "model": {"stax": ["Relu"]},
                "data": {"x1": "x.npy::arr"},
                "output": {"path": "s3://b/k"},
            },
            kernel={"kinds": "nngp", "trace_axes": 1, "implementation": "ntk_vector_products"},
        )
    )
    assert other.kernel["kinds"] == ("nngp",) and other.kernel["trace_axes"] == (1,)
    assert other.kernel["implementation"] == 2
    assert other.x1 == str(tmp_path / "x.npy") + "::arr" and other.path == "s3://b/k"


def test_stax_layer_forms_and_float32_params():
    config = parse_config(
        with_changes(
            TINY,
            model__stax=[
                ["Conv", [4, [3, 3]], {"padding": "SAME"}],  # positional list + kwargs
                ["Conv", {"out_chan": 4, "filter_shape": [3, 3], "padding": "SAME"}],  # kwargs
                "Relu",  # a bare name
                ["Flatten"],
                ["Dense", 10],  # a scalar positional argument
            ],
        )
    )
    x1, x2 = config.load_data()
    assert x1.shape == (24, 8, 8, 1) and x2 is None
    f, params = config.load_model(x1.shape[1:])
    leaves = jax.tree.leaves(params)
    assert leaves and all(p.dtype == np.float32 for p in leaves)  # even with x64 on (conftest)
    assert f(params, x1.read(0, 2)).shape == (2, 10)
    _, again = config.load_model(x1.shape[1:])
    np.testing.assert_array_equal(leaves[0], jax.tree.leaves(again)[0])


def test_entry_point_model(tmp_path):
    raw = {
        "model": {"entry_point": "tests.builder_models:mlp", "args": {"features": 5, "out": 2}},
        "data": {"x1": {"builtin": "synthetic", "shape": [6, 5], "seed": 3}},
        "output": {"path": str(tmp_path / "k.zarr")},
    }
    config = parse_config(raw)
    x1, _ = config.load_data()
    f, params = config.load_model(x1.shape[1:])
    assert f(params, x1.read(0, 6)).shape == (6, 2)
    bad = parse_config(with_changes(raw, model__args={"nope": 1}))
    with pytest.raises(ConfigError, match=r"model.args: calling tests.builder_models:mlp"):
        bad.load_model((5,))


def test_load_builtin():
    x, y = load_builtin("digits", "train")
    assert x.shape == (1500, 8, 8, 1) and x.dtype == np.float32 and y.shape == (1500,)
    assert x.min() == 0.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))
    test_x, test_y = load_builtin("digits", "test")
    all_x, all_y = load_builtin("digits", "all")
    assert test_x.shape == (297, 8, 8, 1)
    np.testing.assert_array_equal(np.concatenate([x, test_x]), all_x)
    np.testing.assert_array_equal(np.concatenate([y, test_y]), all_y)
    first, labels = load_builtin("digits", "train", n=10)
    np.testing.assert_array_equal(first, x[:10])
    np.testing.assert_array_equal(labels, y[:10])
    s, none = load_builtin("synthetic", shape=(4, 32, 32, 3), seed=1)
    assert none is None and s.shape == (4, 32, 32, 3) and s.dtype == np.float32
    np.testing.assert_array_equal(s, load_builtin("synthetic", shape=(4, 32, 32, 3), seed=1)[0])
    assert not np.array_equal(s, load_builtin("synthetic", shape=(4, 32, 32, 3), seed=2)[0])
    with pytest.raises(BuildInputError, match="no built-in dataset 'mnist'"):
        load_builtin("mnist")
    with pytest.raises(BuildInputError, match="split must be one of"):
        load_builtin("digits", "val")


BAD_CONFIGS = {
    "unknown-section": (
        with_changes(TINY, kernal={"kinds": ["ntk"]}),
        r"kernal: unknown key; did you mean 'kernel'\? Valid keys here: model, data",
    ),
    "unknown-key": (
        with_changes(TINY, kernel__trace_axis=[-1]),
        r"kernel.trace_axis: unknown key; did you mean 'trace_axes'\?",
    ),
    "unknown-builtin-key": (
        with_changes(TINY, data__x1__nn=5),
        r"data.x1.nn: unknown key; did you mean 'n'\? Valid keys here: builtin, split, n",
    ),
    "unknown-key-no-suggestion": (with_changes(TINY, zzz=1), r"zzz: unknown key\. Valid keys"),
    "trace-axes-type": (
        with_changes(TINY, kernel__trace_axes="a"),
        r"kernel.trace_axes: expected an int or a list of ints, e.g. \[-1\] or \[\]; got 'a'",
    ),
    "diagonal-axes-type": (
        with_changes(TINY, kernel__diagonal_axes=[0.5]),
        r"kernel.diagonal_axes: expected an int or a list of ints.*got \[0.5\]",
    ),
    "kinds": (
        with_changes(TINY, kernel__kinds=["ntk", "foo"]),
        r"kernel.kinds: expected a list of \['nngp', 'ntk'\] without repeats; got \['ntk', 'foo'\]",
    ),
    "kinds-repeated": (with_changes(TINY, kernel__kinds=["ntk", "ntk"]), r"kernel.kinds"),
    "vmap-axes": (
        with_changes(TINY, kernel__vmap_axes=[0]),
        r"kernel.vmap_axes: expected an int \(the batch axis, asserting examples are "
        r"independent\) or null \(prove it\)",
    ),
    "implementation": (
        with_changes(TINY, kernel__implementation=7),
        r"kernel.implementation: expected one of \[0, 1, 2, 3\] or \['auto', .*got 7",
    ),
    "block-size-zero": (
        with_changes(TINY, tiling__block_size=0),
        r"tiling.block_size: expected a positive int or null; got 0\.",
    ),
    "block-size-bool": (with_changes(TINY, tiling__block_size=True), r"tiling.block_size.*True"),
    "overwrite-str": (
        with_changes(TINY, output__overwrite="yes"),
        r"output.overwrite: expected true or false; got 'yes'",
    ),
    "workers-float": (with_changes(TINY, ray__workers=1.5), r"ray.workers: expected a positive"),
    "address-int": (with_changes(TINY, ray__address=5), r"ray.address: expected a string or null"),
    "seed-str": (with_changes(TINY, model__seed="x"), r"model.seed: expected an int; got 'x'"),
    "missing-model": (
        with_changes(TINY, model=None),
        r"model: expected exactly one of model.stax .* or model.entry_point .*; got neither",
    ),
    "both-models": (
        with_changes(TINY, model__entry_point="tests.builder_models:mlp"),
        r"model: expected exactly one of .*; got both",
    ),
    "empty-stax": (with_changes(TINY, model__stax=[]), r"model.stax: expected a non-empty list"),
    "unknown-layer": (
        with_changes(TINY, model__stax=["Relu", ["Conw", [4, [3, 3]]]]),
        r"model.stax\[1\]: unknown layer 'Conw'; did you mean 'Conv'\? Expected a bigntk.stax",
    ),
    "combinator-layer": (
        with_changes(TINY, model__stax=[["serial"]]),
        r"model.stax\[0\]: unknown layer 'serial'",
    ),
    "layer-form": (with_changes(TINY, model__stax=[5]), r"model.stax\[0\]: expected a layer"),
    "layer-arguments": (
        with_changes(TINY, model__stax=[["Conv", [4]]]),
        r"model.stax\[0\]: Conv rejected the arguments \[\[4\]\]: .*filter_shape",
    ),
    "args-with-stax": (with_changes(TINY, model__args={"a": 1}), r"model.args: expected no args"),
    "entry-point-form": (
        with_changes(TINY, model={"entry_point": "nocolon"}),
        r"model.entry_point: expected 'package.module:function'; got 'nocolon'",
    ),
    "entry-point-import": (
        with_changes(TINY, model={"entry_point": "no_such_module_x:f"}),
        r"model.entry_point: cannot import 'no_such_module_x:f': No module named",
    ),
    "entry-point-attribute": (
        with_changes(TINY, model={"entry_point": "tests.builder_models:nope"}),
        r"cannot import 'tests.builder_models:nope'",
    ),
    "seed-with-entry-point": (
        with_changes(TINY, model={"entry_point": "tests.builder_models:mlp", "seed": 1}),
        r"model.seed: expected no seed with model.entry_point",
    ),
    "missing-x1": (with_changes(TINY, data=None), r"data.x1: expected the inputs"),
    "x1-type": (with_changes(TINY, data__x1=5), r"data.x1: expected a .npy path"),
    "x1-missing-file": (
        with_changes(TINY, data__x1="no/such.npy"),
        r"data.x1: expected an existing .npy file or Zarr store \(relative paths are resolved "
        r"against the current directory",
    ),
    "builtin-name": (
        with_changes(TINY, data__x2={"builtin": "mnist"}),
        r"data.x2.builtin: expected one of \['digits', 'synthetic'\]; got 'mnist'",
    ),
    "digits-split": (
        with_changes(TINY, data__x1__split="val"),
        r"data.x1.split: expected one of \['train', 'test', 'all'\]; got 'val'",
    ),
    "digits-n": (
        with_changes(TINY, data__x1__n=5000),
        r"data.x1.n: expected at most 1500 \(the size of the digits 'train' split\); got 5000",
    ),
    "synthetic-shape": (
        with_changes(TINY, data__x1={"builtin": "synthetic", "shape": [0, 3]}),
        r"data.x1.shape: expected a list of positive ints",
    ),
    "missing-output": (with_changes(TINY, output=None), r"output.path: expected the store's path"),
    "section-type": (with_changes(TINY, kernel=3), r"kernel: expected a mapping with the keys"),
}


@pytest.mark.parametrize("raw,message", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_names_the_field_value_and_expectation(tmp_path, raw, message):
    path = write_config(tmp_path, raw)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ")
    assert isinstance(e.value, BigNTKError) and isinstance(e.value, ValueError)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="the config: expected a mapping with the sections"):
        load_config(tmp_path / "list.yaml")


def test_set_overrides_are_applied_before_validation(tmp_path):
    path = write_config(tmp_path, TINY)
    config = load_config(
        path,
        [
            "data.x1.n=16",  # parsed as YAML: an int
            "kernel.trace_axes=[]",  # a list
            "tiling.block_size=null",  # null
            "ray.address=auto",  # a new section
            "model.stax.3.1=3",  # a list element, by index
            "output.path=" + str(tmp_path / "other.zarr"),
        ],
    )
    assert config.x1["n"] == 16 and config.kernel["trace_axes"] == ()
    assert config.block_size is None and config.address == "auto"
    assert config.path == str(tmp_path / "other.zarr")
    x1, _ = config.load_data()
    f, params = config.load_model(x1.shape[1:])
    assert f(params, x1.read(0, 1)).shape == (1, 3)
    # an override can also make a valid config invalid: validated after
    with pytest.raises(ConfigError, match=r"kernel.kinds: expected"):
        load_config(path, ["kernel.kinds=[foo]"])
    with pytest.raises(ConfigError, match=r"kernel.trace_axis: unknown key; did you mean"):
        load_config(path, ["kernel.trace_axis=[0]"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("noequals", r"--set 'noequals': expected key.path=value, e.g. --set tiling"),
        ("a..b=1", r"expected key.path=value"),
        ("kernel.kinds=[ntk", r"the value is not valid YAML"),
        ("output.path.x=1", r"output.path is 'k.zarr', not a mapping"),
        ("model.stax.9=Relu", r"model.stax has 4 entries, no index 9"),
        ("model.stax.x=Relu", r"model.stax is \[.*\], not a mapping"),
    ],
)
def test_bad_set_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(TINY, [override])


def test_overrides_do_not_change_their_input():
    before = yaml.safe_dump(TINY)
    assert apply_overrides(TINY, ["tiling.block_size=4"])["tiling"]["block_size"] == 4
    assert yaml.safe_dump(TINY) == before


def test_traced_submatrix_for_psd_checks():
    a = np.random.default_rng(0).standard_normal((4, 3))
    full = np.einsum("ik,jl->ijkl", a, a)  # (m, m, out1_1, out1_2)
    np.testing.assert_allclose(traced(full, ["x1", "x2", "out1_1", "out1_2"]), a @ a.T)
    diag = np.einsum("ik,jk->ijk", a, a)  # (m, m, out1): a diagonal output axis
    np.testing.assert_allclose(traced(diag, ["x1", "x2", "out1"]), a @ a.T)


# --- the command, without Ray --------------------------------------------------------------


def test_usage_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["--help"]) == 0
    assert "build" in capsys.readouterr().out
    assert main([]) == 2
    assert "required: COMMAND" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bigntk: error: ") and "no such config" in err
    bad = write_config(tmp_path, with_changes(TINY, kernel__trace_axis=[-1]))
    assert main(["build", bad, "--no-progress"]) == 2
    assert "did you mean 'trace_axes'" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "nothing.zarr")]) == 2
    assert "No kernel store" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert main(["info", str(tmp_path / "plain")]) == 2
    assert "not a bigntk kernel store" in capsys.readouterr().err
    assert main(["verify", bad, "--blocks", "0"]) == 2
    assert "--blocks must be a positive int" in capsys.readouterr().err


def test_errors_print_one_line(capsys):
    _print_error(
        RuntimeError("Block (0, 1) failed 3 times.\n  File x, line 2\n\nValueError: boom\n")
    )
    assert capsys.readouterr().err == (
        "bigntk: error: Block (0, 1) failed 3 times. … ValueError: boom\n"
    )
    _print_error(ConfigError("c.yaml: kernel.kinds: expected ...\nc.yaml: tiling.block_size: x"))
    assert capsys.readouterr().err == (
        "bigntk: error: c.yaml: kernel.kinds: expected ...\n"
        "bigntk: error: c.yaml: tiling.block_size: x\n"
    )


def test_console_script_and_module_run():
    script = pathlib.Path(sys.executable).parent / "bigntk"
    assert script.exists(), "the bigntk console script is missing: run pip install -e ."
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage: bigntk")
    assert all(f"    {cmd} " in out.stdout for cmd in ("build", "status", "info", "verify"))
    cmd = [sys.executable, "-m", "bigntk", "build", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage: bigntk build") and "--set KEY=VALUE" in out.stdout


# --- the command, building on Ray ----------------------------------------------------------


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.xdist_group("ray")
def test_build_status_info_verify_and_a_corrupted_block(tmp_path, capsys):
    store = str(tmp_path / "k.zarr")
    config = write_config(tmp_path, with_changes(TINY, output__path=store))
    assert main(["build", config, "--no-progress"]) == 0
    assert f"bigntk: {store}: 6 blocks computed, 0 resumed, 6 total" in capsys.readouterr().out

    # the stored kernel is the in-memory one
    loaded = load_config(config)
    x1, _ = loaded.load_data()
    f, params = loaded.load_model(x1.shape[1:])
    want = nt.empirical_kernel_fn(f, (-1,), (), 0, 1)(x1.read(0, 24), None, None, params)
    for kind in ("ntk", "nngp"):
        got = nt.open_kernel(store, kind).compute()
        np.testing.assert_allclose(got, getattr(want, kind), rtol=2e-5, atol=1e-5)

    assert main(["status", store]) == 0
    out = capsys.readouterr().out
    assert f"{store}: 6/6 blocks (100.0%), complete" in out
    assert "24 x 24, symmetric; block size 8, grid (3, 3)" in out
    assert "ntk: shape (24, 24) float32, dims (x1, x2)" in out and "nngp: shape" in out
    assert "last run: " in out and "worker: " in out

    assert main(["info", store]) == 0
    info = yaml.safe_load(capsys.readouterr().out)
    assert info["spec"]["layout"]["block"] == 8 and info["spec"]["kinds"] == ["nngp", "ntk"]
    assert info["versions"]["bigntk"] == nt.__version__ and len(info["spec_hash"]) == 16

    assert main(["verify", config, "--blocks", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "(6/6 blocks committed); recomputing entries of 3 blocks by the float64" in out
    auto = KernelStore.open(store).meta["auto_implementation"]  # AUTO as the build decided
    assert f"(the store was built by {nt.NtkImplementation(auto).name})" in out
    assert "FAIL" not in out and "is PSD" in out
    assert "each pair of examples stored once (exactly symmetric by construction)" in out
    assert out.count("recomputed") == 6
    assert out.strip().endswith("checks passed") and "PASS" in out

    # the same command resumes: nothing left to compute; then one forgotten block
    assert main(["build", config, "--no-progress"]) == 0
    assert "0 blocks computed, 6 resumed" in capsys.readouterr().out
    kernel_store = StoreWriter.open(store)
    done = kernel_store.committed()
    done[1, 2] = False
    kernel_store.commit(np.array([[1, 2]]), done)
    assert main(["status", store]) == 0
    assert "5/6 blocks (83.3%), incomplete: run the same build again" in capsys.readouterr().out
    assert main(["verify", config, "--blocks", "10"]) == 0
    assert "(5/6 blocks committed); recomputing entries of 5 blocks" in capsys.readouterr().out
    assert main(["build", config, "--no-progress"]) == 0
    assert "1 blocks computed, 5 resumed" in capsys.readouterr().out

    # a config that does not describe the store: verify fails, build refuses
    assert main(["verify", config, "--set", "model.seed=1"]) == 1
    assert "differs in: model" in capsys.readouterr().out
    assert main(["build", config, "--set", "model.seed=1", "--no-progress"]) == 2
    assert "different spec" in capsys.readouterr().err

    # corrupt block (0, 1) of the NTK: its checksum catches it; the other blocks are recomputed
    arr = zarr.open_array(store, path="ntk", mode="r+")
    arr[0:8, 8:16] = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    assert main(["verify", config, "--blocks", "10"]) == 1
    out = capsys.readouterr().out
    assert "(6/6 blocks committed); recomputing entries of 5 blocks" in out
    assert "FAIL block (0, 1) ntk differs" in out and "block (0, 1) nngp recomputed" not in out
    assert "ok   block (0, 2) ntk recomputed" in out
    assert out.strip().splitlines()[-1].startswith("FAIL: ")

    # --overwrite replaces it
    assert main(["build", config, "--set", "model.seed=1", "--overwrite", "--no-progress"]) == 0
    assert "6 blocks computed" in capsys.readouterr().out
    assert main(["verify", config, "--set", "model.seed=1", "--blocks", "6"]) == 0


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.xdist_group("ray")
def test_rectangular_entry_point_build_and_verify(tmp_path, capsys):
    store = str(tmp_path / "k.zarr")
    raw = {
        "model": {"entry_point": "tests.builder_models:mlp", "args": {"features": 5}},
        "data": {
            "x1": {"builtin": "synthetic", "shape": [10, 5], "seed": 1},
            "x2": {"builtin": "synthetic", "shape": [7, 5], "seed": 2},
        },
        "kernel": {"trace_axes": []},
        "tiling": {"block_size": 4},
        "output": {"path": store},
    }
    config = write_config(tmp_path, raw)
    assert main(["build", config, "--no-progress"]) == 0
    assert "6 blocks computed" in capsys.readouterr().out
    from tests import builder_models as bm

    f, params = bm.mlp(features=5)
    x1 = load_builtin("synthetic", shape=(10, 5), seed=1)[0]
    x2 = load_builtin("synthetic", shape=(7, 5), seed=2)[0]
    want = nt.empirical_ntk_fn(f, (), (), 0)(x1, x2, params)
    got = nt.open_kernel(store).compute()
    assert got.shape == (10, 7, 3, 3)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)
    assert main(["verify", config, "--blocks", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("recomputed") == 2 and "mirror" not in out and "PSD" not in out


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.xdist_group("ray")
def test_shipped_digits_config_on_a_slice(tmp_path, capsys):
    store = str(tmp_path / "digits.zarr")
    config = str(ROOT / "configs" / "digits_ntk.yaml")
    argv = ["--set", "data.x1.n=64", "--set", f"output.path={store}"]
    assert main(["build", config, *argv, "--no-progress"]) == 0
    assert "1 blocks computed" in capsys.readouterr().out
    k = nt.open_kernel(store).compute()
    assert k.shape == (64, 64) and np.isfinite(k).all()
    np.testing.assert_array_equal(k, k.T)
    assert np.linalg.eigvalsh(k.astype(np.float64)).min() > -1e-4 * np.abs(k).max()
