"""The ``model`` section of a config: a list of bigntk.stax layers, or an entry point."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    StrictStr,
    model_validator,
)

from bigntk import stax
from bigntk._text import closest
from bigntk.config._fields import Section, expect, expected, given_only, problem

# layers that fan out or in need parallel branches: not written as a flat list
_FANS = {"FanOut", "FanInSum", "FanInConcat", "FanInProd"}
# the layer functions (stax also exports enums, classes and lowercase helpers)
LAYERS = tuple(
    name
    for name in stax.__all__
    if name[0].isupper() and inspect.isfunction(getattr(stax, name)) and name not in _FANS
)
LAYER_FORMS = (
    'a layer: "Relu", ["Dense", 10], ["Dense", {out_dim: 10}] or '
    '["Conv", [16, [3, 3]], {padding: SAME}]'
)


class LayerSpec(BaseModel):
    """One bigntk.stax layer: its name, then positional arguments and/or keyword arguments.

    Written ``Relu``, ``[Dense, 10]`` (a scalar is one positional argument),
    ``[Dense, {out_dim: 10}]`` or ``[Conv, [16, [3, 3]], {padding: SAME}]``.
    """

    model_config = ConfigDict(strict=True, frozen=True)
    name: str
    args: list = []
    kwargs: dict[str, Any] = {}
    _layer: Any = PrivateAttr(None)

    @property
    def layer(self) -> Any:
        """The stax layer ``(init_fn, apply_fn, kernel_fn)``."""
        return self._layer

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, spec: Any) -> Any:
        spec = [spec] if isinstance(spec, str) else spec
        if not isinstance(spec, list) or not spec or not isinstance(spec[0], str) or len(spec) > 3:
            raise expected(LAYER_FORMS, spec)
        name, *rest = spec
        if name not in LAYERS:
            hint = closest(name, LAYERS)
            raise problem(
                f"unknown layer {name!r}; "
                + (f"did you mean {hint!r}? " if hint else "")
                + f"Expected a bigntk.stax layer, one of {', '.join(LAYERS)}."
            )
        if len(rest) == 2:
            args, kwargs = rest
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise expected(f"[{name!r}, [positional args], {{keyword: args}}]", spec)
        elif not rest:
            args, kwargs = [], {}
        elif isinstance(rest[0], dict):
            args, kwargs = [], rest[0]
        else:
            args, kwargs = rest[0] if isinstance(rest[0], list) else [rest[0]], {}
        return {"name": name, "args": args, "kwargs": kwargs}

    @model_validator(mode="after")
    def _build(self) -> LayerSpec:
        try:
            self._layer = getattr(stax, self.name)(*_tuples(self.args), **_tuples(self.kwargs))
        except (TypeError, ValueError, NotImplementedError) as e:
            given = [self.args, self.kwargs] if self.kwargs else [self.args]
            raise problem(f"{self.name} rejected the arguments {given!r}: {e}") from None
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict:
        name = {"enum": list(LAYERS)}
        written = {"type": "array", "minItems": 1, "maxItems": 3, "items": [name]}  # draft 7
        return {"description": " ".join(cls.__doc__.split()), "anyOf": [name, written]}


def _tuples(value: Any) -> Any:
    """YAML lists to tuples (layer arguments such as filter_shape), recursively."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


Layers = Annotated[
    list[Annotated[LayerSpec, expect(LAYER_FORMS)]],
    Field(min_length=1),
    expect('a non-empty list of layers, e.g. [["Dense", 10]]'),
]
EntryPoint = Annotated[StrictStr, Field(pattern=r"^[^:]+:.+$"), expect("'package.module:function'")]
Args = Annotated[
    dict[str, Any],
    BeforeValidator(lambda v: {} if v is None else v),
    expect("a mapping of keyword arguments of the entry point"),
]


class ModelSection(Section):
    """The function whose kernel is built: exactly one of ``stax`` or ``entry_point``."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["stax"]}, {"required": ["entry_point"]}]}
    )
    stax: Layers = Field(None, json_schema_extra=given_only)  # type: ignore[assignment]
    """bigntk.stax layers, composed with stax.serial."""
    entry_point: EntryPoint = Field(None, json_schema_extra=given_only)  # type: ignore[assignment]
    """'package.module:function' returning (apply_fn, params); imported with the current
    directory on sys.path (Ray workers must be able to import it too)."""
    args: Args = {}
    """entry_point only: keyword arguments of the function."""
    seed: Annotated[StrictInt, expect("an int")] = 0
    """stax only: params = init_fn(jax.random.PRNGKey(seed), x1 shape), cast to float32."""
    _fn: Callable | None = PrivateAttr(None)

    @classmethod
    def _check(cls, raw: dict) -> dict:
        if ("stax" in raw) == ("entry_point" in raw):
            raise problem(
                "expected exactly one of model.stax (a list of layers) or model.entry_point "
                f"('package.module:function'); got {'both' if 'stax' in raw else 'neither'}."
            )
        if "stax" in raw and "args" in raw:
            raise expected("no args with model.stax (args go to entry_point)", raw["args"], "args")
        if "entry_point" in raw and "seed" in raw:
            raise expected("no seed with model.entry_point (pass it in args)", raw["seed"], "seed")
        return raw

    @model_validator(mode="after")
    def _import(self) -> ModelSection:
        if self.entry_point is not None:
            self._fn = _import(self.entry_point)
        return self

    def as_dict(self) -> dict:
        """``{'stax': [layers], 'seed': int}``, else ``{'entry_point': fn, 'name', 'args'}``."""
        if self.stax is not None:
            return {"stax": [spec.layer for spec in self.stax], "seed": self.seed}
        return {"entry_point": self._fn, "name": self.entry_point, "args": dict(self.args)}


def _import(name: str) -> Callable:
    module, _, attr = name.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise problem(f"cannot import {name!r}: {e}.", "entry_point") from None
    finally:
        if added:
            sys.path.remove(cwd)
    if not callable(fn):
        raise expected("a callable returning (apply_fn, params)", name, "entry_point")
    return fn
