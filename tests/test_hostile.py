"""Hostile and careless input: configs and ``build_kernel`` arguments (hypothesis).

Every bad input must raise a clear bigntk error before anything is computed
and leave the store's path as it was (no half-made store). The number of
distinct bad inputs tried is counted in ``TRIED`` and checked at the end.
"""

import contextlib
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
import zarr
from hypothesis import HealthCheck, given, settings

import bigntk as nt
from bigntk.config import parse_config
from bigntk.config._schema import _SECTIONS
from bigntk.errors import BigNTKError, BuildInputError, ConfigError
from bigntk.store import KernelStore, StoreWriter
from tests import builder_models as bm

pytestmark = pytest.mark.xdist_group("ray")  # one process: TRIED counts every example

TRIED: dict[str, set] = {"config": set(), "typo": set(), "api": set()}
ERRORS: dict[str, str] = {}  # the message for each single bad argument, shown by the last test
_SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

BASE = {
    "model": {"stax": [["Dense", 8], "Relu", ["Dense", 2]], "seed": 0},
    "data": {"x1": {"builtin": "synthetic", "shape": [6, 3], "seed": 0}},
    "kernel": {"kinds": ["ntk"], "trace_axes": [-1]},
    "tiling": {"block_size": 4},
    "output": {"path": "k.zarr"},
    "ray": {"address": None, "workers": None},
}

# --- configs -------------------------------------------------------------------------------

_KEYS = [k for keys in _SECTIONS.values() for k in keys] + list(_SECTIONS) + ["builtin", "n"]
_WORDS = st.sampled_from(["Dense", "Relu", "digits", "synthetic", "x.npy", "ntk", "nngp"])
# small ints only where a value may be built (a layer width, a dataset shape): 2**40 would
# really be allocated; parse-only tests also get huge ones
_small = st.none() | st.booleans() | st.integers(-3, 64) | st.floats() | st.text(max_size=8)
_huge = st.sampled_from([2**31, 2**40, -(2**63), 10**30])


def _nested(scalars):
    return st.recursive(
        scalars | _WORDS,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=12,
    )


_values = _nested(_small)
_fields = st.sampled_from(
    [(section, key) for section, keys in _SECTIONS.items() for key in keys]
    + [(section, None) for section in _SECTIONS]
)


def _parse(raw):
    """parse_config, then build the model and data like `bigntk build` does."""
    config = parse_config(raw)
    x1, _ = config.load_data()
    config.load_model(x1.shape[1:])
    return config


@settings(max_examples=150, **_SETTINGS)
@given(raw=_nested(_small | _huge))
def test_any_yaml_value_is_a_config_or_a_config_error(raw):
    try:
        parse_config(raw)
    except ConfigError as e:
        assert str(e) and "expected" in str(e) or "unknown" in str(e) or "did you mean" in str(e)
        TRIED["config"].add(repr(raw))


@settings(max_examples=200, **_SETTINGS)
@given(field=_fields, value=_values)
def test_one_bad_field_in_a_valid_config_is_named(tmp_path_factory, field, value):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    section, key = field
    if key is None:
        raw[section] = value
    else:
        raw[section][key] = value
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.getbasetemp())
    try:
        _parse(raw)
    except (ConfigError, BuildInputError) as e:
        where = section if key is None else f"{section}.{key}"
        assert where.split(".")[0] in str(e) or "model" in str(e), str(e)
        TRIED["config"].add(repr((field, value)))
    finally:
        os.chdir(cwd)


def _typos(word):
    """One-edit typos: a letter dropped, doubled, swapped with the next, or replaced."""
    out = set()
    for i in range(len(word)):
        out.add(word[:i] + word[i + 1 :])
        out.add(word[:i] + word[i] + word[i:])
        if i + 1 < len(word):
            out.add(word[:i] + word[i + 1] + word[i] + word[i + 2 :])
        out.add(word[:i] + ("x" if word[i] != "x" else "y") + word[i + 1 :])
    return sorted(out - {word})


_TYPOS = [
    (section, key, typo)
    for section, keys in [("", tuple(_SECTIONS)), *_SECTIONS.items()]
    for key in keys
    for typo in _typos(key)
    if typo not in keys and len(key) >= 4
]


@settings(max_examples=120, **_SETTINGS)
@given(case=st.sampled_from(_TYPOS))
def test_a_typo_in_a_key_names_the_closest_valid_key(case):
    section, key, typo = case
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    node = raw if not section else raw[section]
    node[typo] = node.pop(key, 1)
    with pytest.raises(ConfigError, match="unknown key") as e:
        parse_config(raw)
    assert f"did you mean {key!r}?" in str(e.value), (typo, str(e.value))
    TRIED["typo"].add(case)


# --- build_kernel arguments ----------------------------------------------------------------


def _not_a_store(kind, where):
    where = pathlib.Path(where)
    if kind == "file":
        (where / "k.zarr").write_text("not a store")
    elif kind == "dir":
        (where / "k.zarr").mkdir()
        (where / "k.zarr" / "notes.txt").write_text("mine")
    elif kind == "group":
        zarr.open_group(str(where / "k.zarr"), mode="w").attrs["user"] = 1
    elif kind == "array":
        zarr.create_array(str(where / "k.zarr"), shape=(3,), dtype="f4")
    elif kind == "format":
        store, _ = StoreWriter.create_or_resume(str(where / "k.zarr"), _tiny_spec())
        store.update_meta(format=99)
    elif kind == "spec":  # a bigntk store of another spec
        StoreWriter.create_or_resume(str(where / "k.zarr"), _tiny_spec())


def _tiny_spec():
    layout = {"n1": 4, "n2": 4, "block": 2, "symmetric": True, "diagonal": False,
              "dims": ["x1", "x2"], "out_shape": [], "dtype": "float32"}  # fmt: skip
    return {"kinds": ["ntk"], "layout": layout, "model": "m", "x1": "a", "x2": None}


def _valid():
    f, params = bm.mlp(width=4, out=2)
    return f, params, bm.data(6, seed=3)


def _raising_f(params, x):
    raise RuntimeError("model bug")


_X = {
    "empty": np.zeros((0, 5), np.float32),
    "nan": np.where(np.eye(6, 5) > 0, np.nan, 1.0).astype(np.float32),
    "inf": np.full((6, 5), -np.inf, np.float32),
    "rank1": np.ones(6, np.float32),
    "rank0": np.float32(1.0),
    "strings": np.full((6, 5), "a"),
    "objects": np.full((6, 5), None, dtype=object),
    "complex": np.ones((6, 5), np.complex64),
    "features": np.ones((6, 4), np.float32),
    "list": [[1.0] * 5] * 6,
    "none": None,
    "missing-npy": "/nonexistent/x.npy",
    "missing-zarr": "/nonexistent/x.zarr",
    "dict": {"x": 1},
}
_BAD = {
    "x1": st.sampled_from(sorted(_X)),
    "x2": st.sampled_from(sorted(set(_X) - {"none"}) + ["float64", "float16"]),
    "block_size": st.sampled_from([0, -1, -(2**40), 2.5, 4.0, True, "4", [4]]),
    "kinds": st.sampled_from([None, 3, "foo", ("ntk", "ntk"), (), ("ntk", 1), "NTK"]),
    "trace_axes": st.sampled_from([0, (0,), 5, -9, "a", 1.5, (None,), {"a": 1}]),
    "diagonal_axes": st.sampled_from([5, -9, "a", (1.5,), (-1, -1)]),
    "vmap_axes": st.sampled_from(["x", 7, -9, 2.5, (0, 0, 0, 0)]),
    "implementation": st.sampled_from([9, -1, "foo", None, 2.5, "1"]),
    "path": st.sampled_from(
        [None, 3, "", b"", "memory://k.zarr", "file", "dir", "group", "array", "format", "spec"]
    ),  # fmt: skip
    "workers": st.sampled_from([0, -1, 1.5, "2", True]),
    "lease_wait": st.sampled_from([-1, "x", True, [1]]),
    "f": st.sampled_from([3, "f", "raising", "dict-output", "scalar-output"]),
    "params": st.sampled_from([None, "p", (np.ones((2, 2)),)]),
}
_FS = {
    "raising": _raising_f,
    "dict-output": lambda p, x: {"a": x @ p[0][0]},
    "scalar-output": lambda p, x: jnp.sum(x),
}


def _snapshot(root):
    out = {}
    for p in sorted(pathlib.Path(root).rglob("*")):
        out[str(p.relative_to(root))] = (
            hashlib.md5(p.read_bytes()).hexdigest() if p.is_file() else "d"
        )
    return out


def _single_values(name):
    strategy = _BAD[name]
    return list(strategy.elements) if hasattr(strategy, "elements") else []


_SINGLES = [(name, value) for name in sorted(_BAD) for value in _single_values(name)]


@pytest.mark.usefixtures("ray_cluster")
def test_every_single_bad_argument_fails_early_and_leaves_no_store():
    assert len(_SINGLES) > 60
    for name, value in _SINGLES:
        _check_bad({name: value})


@pytest.mark.usefixtures("ray_cluster")
@settings(max_examples=90, **_SETTINGS)
@given(bad=st.dictionaries(st.sampled_from(sorted(_BAD)), st.just(None), min_size=1, max_size=2)
       .flatmap(lambda keys: st.fixed_dictionaries({k: _BAD[k] for k in keys})))  # fmt: skip
def test_bad_build_arguments_fail_early_and_leave_no_store(bad):
    _check_bad(bad)


def _check_bad(bad):
    f, params, x = _valid()
    with tempfile.TemporaryDirectory() as where:
        args = {"f": f, "params": params, "x1": x, "x2": None}
        kwargs = {"path": os.path.join(where, "k.zarr"), "block_size": 4, "progress": False}
        for name, value in bad.items():
            if name in ("x1", "x2"):
                value = _X.get(value) if value in _X else x.astype(value)
                args[name] = value
            elif name == "f":
                args["f"] = _FS.get(value, value)
            elif name == "params":
                args["params"] = value
            elif name == "path" and value in ("file", "dir", "group", "array", "format", "spec"):
                _not_a_store(value, where)
            else:
                kwargs[name] = value
        before = _snapshot(where)
        with pytest.raises(BigNTKError) as e, contextlib.chdir(where):
            nt.build_kernel(args["f"], args["params"], args["x1"], args["x2"], **kwargs)
        assert str(e.value), type(e.value)
        assert _snapshot(where) == before, f"{bad}: the store's path changed"
        if len(bad) == 1:
            ((name, value),) = bad.items()
            message = str(e.value).splitlines()[0][:150]
            ERRORS[f"{name}={value!r}"[:40]] = f"{type(e.value).__name__}: {message}"
    TRIED["api"].add(repr(sorted(bad.items())))


@pytest.mark.usefixtures("ray_cluster")
def test_odd_but_valid_arrays_build_the_right_kernel(tmp_path):
    """Big-endian, Fortran-ordered and strided inputs, and a block larger than the data."""
    f, params = bm.mlp()
    x1 = bm.data(7, seed=1).astype(">f4")
    x2 = np.asfortranarray(bm.data(12, seed=2)[::2])
    result = nt.build_kernel(f, params, x1, x2, path=str(tmp_path / "k.zarr"), block_size=1000,
                             progress=False)  # fmt: skip
    assert result.total == 1
    store = KernelStore.open(str(tmp_path / "k.zarr"))
    assert store.plan.block == 7 and store.array("ntk").chunks == (7, 7)  # not 1000 x 1000
    want = nt.empirical_ntk_fn(f, vmap_axes=0)(x1.astype("<f4"), np.ascontiguousarray(x2), params)
    np.testing.assert_allclose(nt.open_kernel(str(tmp_path / "k.zarr")).compute(), want,
                               rtol=2e-5, atol=1e-5)  # fmt: skip


def test_count_of_distinct_bad_inputs():
    """After the tests above: how many distinct bad inputs the suite tried."""
    counts = {k: len(v) for k, v in TRIED.items()}
    print(f"\nbigntk hostile-input suite: distinct bad inputs tried: {counts}, "
          f"total {sum(counts.values())}")  # fmt: skip
    for name, message in sorted(ERRORS.items()):
        print(f"  {name}: {message}")
    if all(counts.values()):  # the whole module ran (not a -k selection)
        assert sum(counts.values()) >= 200


# --- security ------------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _evil_v2_store(root, marker):
    """A Zarr v2 group posing as a kernel store, its manifest a pickled object array."""
    import numcodecs

    layout = {"n1": 4, "n2": 4, "block": 4, "symmetric": False, "diagonal": False,
              "dims": ["x1", "x2"], "out_shape": [], "dtype": "float32"}  # fmt: skip
    meta = {"format": 1, "spec": {"kinds": ["ntk"], "layout": layout}, "spec_hash": "x"}
    (root / "manifest").mkdir(parents=True)
    (root / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (root / ".zattrs").write_text(json.dumps({"bigntk": meta}))
    array = {"zarr_format": 2, "shape": [1, 1], "chunks": [1, 1], "dtype": "|O",
             "compressor": None, "fill_value": None, "order": "C",
             "filters": [{"id": "pickle", "protocol": 5}]}  # fmt: skip
    (root / "manifest" / ".zarray").write_text(json.dumps(array))
    payload = np.empty((1, 1), dtype=object)
    payload[0, 0] = _Evil(marker)
    (root / "manifest" / "0.0").write_bytes(numcodecs.Pickle().encode(payload))


def test_opening_a_store_executes_no_code_from_it(tmp_path, monkeypatch, capsys):
    from bigntk.cli import main

    marker = tmp_path / "pwned"
    _evil_v2_store(tmp_path / "evil.zarr", str(marker))
    for call in (lambda p: KernelStore.open(p), lambda p: nt.open_kernel(p, allow_incomplete=True)):
        with pytest.raises(BigNTKError, match="not a Zarr group"):
            call(str(tmp_path / "evil.zarr"))
    # a real store whose attributes name an importable module: nothing imports it
    code = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    (tmp_path / "evil_mod.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    store, _ = StoreWriter.create_or_resume("k.zarr", _tiny_spec())
    store.update_meta(spec={**store.spec, "model": "evil_mod:f", "entry_point": "evil_mod:f"})
    for argv in (["status", "k.zarr"], ["info", "k.zarr"], ["verify", "k.zarr", "--checksums"]):
        main(argv)
    nt.open_kernel("k.zarr", allow_incomplete=True).compute()
    capsys.readouterr()
    assert not marker.exists() and "evil_mod" not in sys.modules


_EMBEDDED_RAY = """
import json, socket, ray
from ray._private.authentication.authentication_utils import is_token_auth_enabled
from bigntk._ray import start_ray
start_ray(None)
node = ray._private.worker._global_node
print("RESULT " + json.dumps({"token_auth": bool(is_token_auth_enabled()),
                              "dashboard": bool(node.address_info.get("webui_url"))}))
ray.shutdown()
"""


def test_the_embedded_ray_has_no_dashboard_and_requires_a_token():
    pytest.importorskip("ray._private.authentication.authentication_utils")  # Ray >= 2.5x
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    out = subprocess.run([sys.executable, "-c", _EMBEDDED_RAY], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, out.stderr[-2000:]
    assert json.loads(line[0][7:]) == {"token_auth": True, "dashboard": False}
