"""The build config schema: validation of a config read from YAML.

Schema (every section but ``model``, ``data`` and ``output`` may be left out)::

    model:                  # exactly one of stax / entry_point
      stax:                 # layers of bigntk.stax, composed with stax.serial
        - ["Conv", [16, [3, 3]], {padding: SAME}]   # name, positional list, kwargs
        - ["Relu"]                                  # or just: Relu
        - ["Dense", 10]                             # a scalar is one positional argument
        - ["Dense", {out_dim: 10, b_std: 0.1}]      # a mapping is keyword arguments
      seed: 0               # stax only: params = init_fn(jax.random.PRNGKey(seed), x1 shape)
      entry_point: "package.module:function"   # returns (apply_fn, params)
      args: {}              # entry_point only: keyword arguments of the function
    data:
      x1: "x.npy"           # or "store.zarr", "store.zarr::array", an fsspec URL, or a
                            # built-in: {builtin: digits, split: train|test|all, n: 1000}
                            #           {builtin: synthetic, shape: [N, 32, 32, 3], seed: 0}
      x2: null              # null: the symmetric K(x1, x1); else the same forms as x1
      fingerprint: full     # full: hash every row (at each run); sample: 64 rows (see
                            # bigntk.build_kernel's data_fingerprint)
    kernel: {kinds: [ntk], trace_axes: [-1], diagonal_axes: [], vmap_axes: null,
             implementation: auto}       # as in bigntk.empirical_kernel_fn (0 = auto);
                                         # vmap_axes null: prove batch independence
    tiling: {block_size: null}           # null: chosen from memory and cost
    output: {path: "kernels/k.zarr", overwrite: false}
    ray: {address: null, workers: null}  # null address: a new local Ray
    # per worker (optional): num_cpus: 1, num_gpus: 0.5, resources: {TPU: 4},
    #                        memory_fraction: 0.45   (see bigntk.build._resources)

Relative paths (data and output) are resolved against the current working
directory, not the config file's; data paths must exist. An entry point's module is
imported with the current directory on ``sys.path``; Ray workers must be able
to import it too (an installed package, or a module in the current directory
for a local Ray).

Every failure is a :class:`~bigntk.errors.ConfigError` naming the field, the value
and what is expected.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from bigntk._text import closest
from bigntk.build import KINDS
from bigntk.config._datasets import BUILTIN_KEYS, DIGITS_SPLITS
from bigntk.empirical import DEFAULT_NTK_IMPLEMENTATION, NtkImplementation
from bigntk.errors import ConfigError
from bigntk.store import is_url

_SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("stax", "entry_point", "args", "seed"),
    "data": ("x1", "x2", "fingerprint"),
    "kernel": ("kinds", "trace_axes", "diagonal_axes", "vmap_axes", "implementation"),
    "tiling": ("block_size",),
    "output": ("path", "overwrite"),
    "ray": ("address", "workers", "num_cpus", "num_gpus", "resources", "memory_fraction"),
}
# combinators that take layers cannot be written as a flat list
_NOT_LAYERS = {"serial", "parallel", "FanOut", "FanInSum", "FanInConcat", "Kernel"}


def validate(raw: Any) -> dict[str, Any]:
    """A config already read from YAML, checked: the fields of a ``BuildConfig`` but ``source``."""
    if not isinstance(raw, dict):
        fail("the config", raw, f"a mapping with the sections {list(_SECTIONS)}")
    _check_keys("", raw, tuple(_SECTIONS))
    sections = {}
    for name, keys in _SECTIONS.items():
        section = raw.get(name)
        if section is None:
            section = {}
        elif not isinstance(section, dict):
            fail(name, section, f"a mapping with the keys {list(keys)}")
        _check_keys(name, section, keys)
        sections[name] = section
    data, output, ray = sections["data"], sections["output"], sections["ray"]
    if data.get("x1") is None:
        fail("data.x1", None, "the inputs: a .npy or Zarr path, or {builtin: digits}")
    if not isinstance(output.get("path"), str) or not output["path"]:
        fail("output.path", output.get("path"), "the store's path, e.g. kernels/k.zarr")
    return {
        "model": _parse_model(sections["model"]),
        "x1": _parse_data("data.x1", data["x1"]),
        "x2": None if data.get("x2") is None else _parse_data("data.x2", data["x2"]),
        "kernel": _parse_kernel(sections["kernel"]),
        "block_size": _optional_int("tiling.block_size", sections["tiling"].get("block_size")),
        "path": _resolve(output["path"]),
        "overwrite": _bool("output.overwrite", output.get("overwrite", False)),
        "address": _optional_str("ray.address", ray.get("address")),
        "workers": _optional_int("ray.workers", ray.get("workers")),
        "worker_resources": _parse_worker_resources(ray),
        "data_fingerprint": _choice(
            "data.fingerprint", data.get("fingerprint", "full"), ("full", "sample")
        ),  # fmt: skip
    }


# --- sections ------------------------------------------------------------------------------


def _parse_model(model: dict) -> dict:
    if ("stax" in model) == ("entry_point" in model):
        got = "both" if "stax" in model else "neither"
        raise ConfigError(
            "model: expected exactly one of model.stax (a list of layers) or model.entry_point "
            f"('package.module:function'); got {got}."
        )
    if "stax" in model:
        if "args" in model:
            fail("model.args", model["args"], "no args with model.stax (args go to entry_point)")
        layers = model["stax"]
        if not isinstance(layers, list) or not layers:
            fail("model.stax", layers, 'a non-empty list of layers, e.g. [["Dense", 10]]')
        return {
            "stax": [_parse_layer(f"model.stax[{i}]", layer) for i, layer in enumerate(layers)],
            "seed": _int("model.seed", model.get("seed", 0)),
        }
    if "seed" in model:
        fail("model.seed", model["seed"], "no seed with model.entry_point (pass it in args)")
    name = model["entry_point"]
    module, sep, attr = name.partition(":") if isinstance(name, str) else ("", "", "")
    if not (module and sep and attr):
        fail("model.entry_point", name, "'package.module:function'")
    args = model.get("args") or {}
    if not isinstance(args, dict):
        fail("model.args", args, "a mapping of keyword arguments of the entry point")
    return {"entry_point": _import(module, attr, name), "name": name, "args": args}


def _import(module: str, attr: str, name: str) -> Callable:
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"model.entry_point: cannot import {name!r}: {e}.") from None
    finally:
        if added:
            sys.path.remove(cwd)
    if not callable(fn):
        fail("model.entry_point", name, "a callable returning (apply_fn, params)")
    return fn


def _parse_layer(field: str, spec: Any) -> Any:
    from bigntk import stax

    if isinstance(spec, str):
        spec = [spec]
    if not isinstance(spec, list) or not spec or not isinstance(spec[0], str) or len(spec) > 3:
        fail(
            field,
            spec,
            'a layer: "Relu", ["Dense", 10], ["Dense", {out_dim: 10}] or '
            '["Conv", [16, [3, 3]], {padding: SAME}]',
        )
    name, *rest = spec
    valid = [n for n in stax.__all__ if n not in _NOT_LAYERS]
    if name not in valid:
        hint = difflib.get_close_matches(name, valid, n=1)
        raise ConfigError(
            f"{field}: unknown layer {name!r}; "
            + (f"did you mean {hint[0]!r}? " if hint else "")
            + f"Expected a bigntk.stax layer, one of {', '.join(valid)}."
        )
    if len(rest) == 2:
        args, kwargs = rest
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            fail(field, spec, f"[{name!r}, [positional args], {{keyword: args}}]")
    elif not rest:
        args, kwargs = [], {}
    elif isinstance(rest[0], dict):
        args, kwargs = [], rest[0]
    else:
        args, kwargs = rest[0] if isinstance(rest[0], list) else [rest[0]], {}
    try:
        return getattr(stax, name)(*_tuples(args), **_tuples(kwargs))
    except (TypeError, ValueError, NotImplementedError) as e:
        raise ConfigError(f"{field}: {name} rejected the arguments {rest!r}: {e}") from None


def _tuples(value: Any) -> Any:
    """YAML lists to tuples (layer arguments such as filter_shape), recursively."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _parse_data(field: str, value: Any) -> Any:
    if isinstance(value, str) and value:
        return _resolve(value, field)
    if not isinstance(value, dict):
        fail(
            field,
            value,
            "a .npy path, a Zarr path (store.zarr or store.zarr::array), or "
            "{builtin: digits | synthetic, ...}",
        )
    name = value.get("builtin")
    if name not in BUILTIN_KEYS:
        fail(f"{field}.builtin", name, f"one of {list(BUILTIN_KEYS)}")
    _check_keys(field, value, BUILTIN_KEYS[name])
    if name == "synthetic":
        shape = value.get("shape")
        if not isinstance(shape, list) or not shape or not all(_is_int(s) and s > 0 for s in shape):
            fail(f"{field}.shape", shape, "a list of positive ints [N, *features]")
        return {"name": name, "shape": shape, "seed": _int(f"{field}.seed", value.get("seed", 0))}
    split = value.get("split", "all")
    if split not in DIGITS_SPLITS:
        fail(f"{field}.split", split, f"one of {list(DIGITS_SPLITS)}")
    size = DIGITS_SPLITS[split].stop - DIGITS_SPLITS[split].start
    n = _optional_int(f"{field}.n", value.get("n"))
    if n is not None and n > size:
        fail(f"{field}.n", n, f"at most {size} (the size of the digits {split!r} split)")
    return {"name": name, "split": split, "n": n}


def _parse_kernel(kernel: dict) -> dict:
    kinds = kernel.get("kinds", ["ntk"])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if (
        not isinstance(kinds, list)
        or not kinds
        or not all(isinstance(k, str) for k in kinds)
        or len(set(kinds)) != len(kinds)
        or not set(kinds) <= set(KINDS)
    ):
        fail("kernel.kinds", kernel.get("kinds"), f"a list of {list(KINDS)} without repeats")
    impl = kernel.get("implementation", int(DEFAULT_NTK_IMPLEMENTATION))
    names = {m.name.lower(): int(m) for m in NtkImplementation}
    if isinstance(impl, str) and impl.lower() in names:
        impl = names[impl.lower()]
    elif not (_is_int(impl) and impl in names.values()):
        fail("kernel.implementation", impl, f"one of {sorted(names.values())} or {list(names)}")
    vmap_axes = kernel.get("vmap_axes")
    if vmap_axes is not None and not _is_int(vmap_axes):
        fail(
            "kernel.vmap_axes",
            vmap_axes,
            "an int (the batch axis, asserting examples are independent) or null (prove it)",
        )
    return {
        "kinds": tuple(kinds),
        "trace_axes": _axes("kernel.trace_axes", kernel.get("trace_axes", [-1])),
        "diagonal_axes": _axes("kernel.diagonal_axes", kernel.get("diagonal_axes", [])),
        "vmap_axes": vmap_axes,
        "implementation": impl,
    }


def _parse_worker_resources(ray: dict) -> dict:
    from bigntk.build import WorkerResources
    from bigntk.errors import BuildInputError

    keys = ("num_cpus", "num_gpus", "resources", "memory_fraction")
    chosen = {k: ray[k] for k in keys if ray.get(k) is not None}
    try:
        WorkerResources.coerce(chosen)
    except BuildInputError as e:
        raise ConfigError(f"ray: {e}") from None
    return chosen


# --- checks --------------------------------------------------------------------------------


def fail(field: str, value: Any, expected: str) -> NoReturn:
    """Raise ``ConfigError('<field>: expected <expected>; got <value>.')``."""
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise ConfigError(f"{field}: expected {expected}; got {shown}.")


def _check_keys(field: str, mapping: dict, valid: tuple[str, ...]) -> None:
    for key in mapping:
        if key not in valid:
            close = closest(str(key), valid)
            hint = f"; did you mean {close!r}?" if close else "."
            where = f"{field}.{key}" if field else str(key)
            raise ConfigError(f"{where}: unknown key{hint} Valid keys here: {', '.join(valid)}.")


def _choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        fail(field, value, f"one of {list(choices)}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(field: str, value: Any) -> int:
    if not _is_int(value):
        fail(field, value, "an int")
    return value


def _optional_int(field: str, value: Any) -> int | None:
    if value is not None and not (_is_int(value) and value > 0):
        fail(field, value, "a positive int or null")
    return value


def _optional_str(field: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        fail(field, value, "a string or null")
    return value


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        fail(field, value, "true or false")
    return value


def _axes(field: str, value: Any) -> tuple[int, ...]:
    if _is_int(value):
        return (value,)
    if not isinstance(value, list) or not all(_is_int(a) for a in value):
        fail(field, value, "an int or a list of ints, e.g. [-1] or []")
    return tuple(value)


def _resolve(path: str, field: str | None = None) -> str:
    """An absolute path (relative to the current directory); URLs are kept as they are."""
    if is_url(path):
        return path
    store, sep, array = path.removeprefix("file://").partition("::")
    resolved = os.path.abspath(store)
    if field is not None and not os.path.exists(resolved):
        fail(
            field,
            path,
            f"an existing .npy file or Zarr store (relative paths are resolved "
            f"against the current directory, {os.getcwd()})",
        )
    return resolved + sep + array
