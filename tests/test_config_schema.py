"""The config's JSON schema (bigntk/config/_schema.py) and how validation errors read."""

import json
import pathlib

import jsonschema
import pytest

from bigntk.config import json_schema, load_config, parse_config
from bigntk.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "configs" / "bigntk-config.schema.json"
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

VALID = {
    "model": {
        "stax": [["Conv", [4, [3, 3]], {"padding": "SAME"}], "Relu", "Flatten", ["Dense", 3]]
    },
    "data": {"x1": {"builtin": "digits", "split": "train", "n": 8}},
    "kernel": {"kinds": ["ntk", "nngp"], "implementation": "structured_derivatives"},
    "output": {"path": "k.zarr"},
    "ray": {"num_gpus": 0.5, "resources": {"TPU": 4}},
}


def _validator():
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def test_the_committed_schema_is_the_generated_one():
    assert json.loads(SCHEMA.read_text()) == json_schema(), (
        "configs/bigntk-config.schema.json is stale; regenerate it with "
        "`python -m bigntk.config > configs/bigntk-config.schema.json`"
    )
    jsonschema.Draft7Validator.check_schema(json_schema())
    # draft 7 (what editors read): keywords of later drafts would be silently ignored
    text = SCHEMA.read_text()
    for newer in ("prefixItems", "unevaluated", "dependentRequired", "$dynamicRef", "minContains"):
        assert newer not in text


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_is_valid_for_the_schema_and_the_loader(path):
    import yaml

    errors = [e.message for e in _validator().iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []
    assert load_config(path).path.endswith(".zarr")


def _with(**changes):
    raw = json.loads(json.dumps(VALID))
    for key, value in changes.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value
    return raw


# each is refused by the JSON schema (an editor underlines it) and by the loader
REFUSED = {
    "unknown-key": (_with(kernel__trace_axis=[-1]), r"kernel.trace_axis: unknown key; did you"),
    "kinds": (_with(kernel__kinds=["ntk", "ntk"]), r"kernel.kinds: expected a list of"),
    "implementation": (_with(kernel__implementation=7), r"kernel.implementation: expected one"),
    "block-size": (_with(tiling__block_size=0), r"tiling.block_size: expected a positive int"),
    "overwrite": (_with(output__overwrite="yes"), r"output.overwrite: expected true or false"),
    "layer": (_with(model__stax=[["Conw", 3]]), r"model.stax\[0\]: unknown layer 'Conw'"),
    "layer-form": (_with(model__stax=[{"Dense": 3}]), r"model.stax\[0\]: expected a layer"),
    "both-models": (_with(model__entry_point="m:f"), r"model: expected exactly one of"),
    "builtin": (_with(data__x1={"builtin": "mnist"}), r"data.x1.builtin: expected one of"),
    "digits-key": (_with(data__x1={"builtin": "digits", "nn": 3}), r"data.x1.nn: unknown key"),
    "synthetic-shape": (
        _with(data__x1={"builtin": "synthetic", "shape": [0]}),
        r"data.x1.shape: expected a list of positive ints",
    ),
    "num-gpus": (_with(ray__num_gpus=-1), r"ray.num_gpus: expected a number >= 0 or null"),
    "memory-fraction": (_with(ray__memory_fraction=True), r"ray.memory_fraction: expected"),
}


def test_a_valid_config_is_valid_for_both():
    assert list(_validator().iter_errors(VALID)) == []
    config = parse_config(VALID)
    assert config.kernel["implementation"] == 3 and config.worker_resources["num_gpus"] == 0.5


@pytest.mark.parametrize("raw,message", REFUSED.values(), ids=REFUSED.keys())
def test_the_schema_and_the_loader_refuse_the_same_configs(raw, message):
    assert list(_validator().iter_errors(raw)), "the JSON schema accepts it"
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_every_problem_is_one_line_naming_its_field_and_no_pydantic_text_leaks():
    raw = _with(kernel__kinds="foo", tiling__block_size=-1)
    raw["model"]["stax"] = ["Relu", ["Dense", {"out_dim": 2, "nope": 1}], 5]
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    lines = str(e.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "model.stax[1]",
        "model.stax[2]",
        "kernel.kinds",
        "tiling.block_size",
    ]
    assert "Dense rejected the arguments [[], {'out_dim': 2, 'nope': 1}]" in lines[0]
    assert lines[2] == (
        "kernel.kinds: expected a list of ['nngp', 'ntk'] without repeats; got 'foo'."
    )
    for leak in ("validation error", "pydantic", "Input should", "For further information"):
        assert leak not in str(e.value)


def test_a_union_member_does_not_show_in_the_field_path():
    with pytest.raises(ConfigError, match=r"^data\.x1\.n: expected at most 1500 .*; got 2000\.$"):
        parse_config(_with(data__x1={"builtin": "digits", "split": "train", "n": 2000}))
    with pytest.raises(ConfigError, match=r"^data\.x2\.seed: expected an int; got 'a'\.$"):
        parse_config(_with(data__x2={"builtin": "synthetic", "shape": [2, 8, 8, 1], "seed": "a"}))
