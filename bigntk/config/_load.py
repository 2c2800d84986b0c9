"""Build configs: a YAML file that names everything :func:`bigntk.build_kernel` needs.

A config is read (:func:`read_config`, :func:`load_config`), ``--set`` overrides are
applied to it, it is validated against the schema of
:mod:`bigntk.config._schema`, and the resulting :class:`BuildConfig` loads the
model and data it names. ``stax`` parameters are cast to float32.

Overrides (``--set key.path=value``, the value parsed as YAML) are applied
before validation. Invalid configs raise :class:`~bigntk.errors.ConfigError`
naming the field, the value and what is expected.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import yaml

from bigntk.build import MemorySource, Source, as_source
from bigntk.config._datasets import load_builtin
from bigntk.config._fields import fail
from bigntk.config._schema import ConfigFile, validate
from bigntk.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """A validated build config; see :mod:`bigntk.config._schema` for the schema.

    Attributes:
        source: where it came from (the config file's path).
        model: ``{'stax': [layers], 'seed': int}`` or
            ``{'entry_point': callable, 'name': str, 'args': dict}``.
        x1, x2: absolute paths/URLs, or built-in dataset dicts (``x2`` may be None).
        kernel: ``kinds``, ``trace_axes``, ``diagonal_axes``, ``vmap_axes``,
            ``implementation`` (axes as tuples, implementation as an int).
        block_size, path, overwrite, address, workers: as in :func:`bigntk.build_kernel`.
    """

    source: str
    model: dict
    x1: Any
    x2: Any
    kernel: dict
    block_size: int | None
    path: str
    overwrite: bool
    address: str | None
    workers: int | None
    worker_resources: dict = dataclasses.field(default_factory=dict)
    data_fingerprint: str = "full"

    def load_data(self) -> tuple[Source, Source | None]:
        """The data sources ``(x1, x2)``; built-in datasets are loaded into memory."""
        return _load_source(self.x1, "x1"), None if self.x2 is None else _load_source(self.x2, "x2")

    def load_model(self, feature_shape: Sequence[int]) -> tuple[Callable, Any]:
        """``(f, params)`` for inputs ``(n, *feature_shape)``."""
        if "stax" in self.model:
            return _init_stax(self.model["stax"], self.model["seed"], tuple(feature_shape))
        return _call_entry_point(self.model["entry_point"], self.model["name"], self.model["args"])

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`bigntk.build_kernel` other than the model and data."""
        return {
            "path": self.path,
            **self.kernel,
            "block_size": self.block_size,
            "address": self.address,
            "workers": self.workers,
            "worker_resources": self.worker_resources or None,
            "overwrite": self.overwrite,
            "data_fingerprint": self.data_fingerprint,
        }


def read_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> tuple[Any, BuildConfig]:
    """``(raw, validated)``: a YAML build config with ``--set`` style overrides applied.

    Raises:
        ConfigError: the file is missing or invalid; the message starts with its path.
    """
    source = str(path)
    try:
        with open(source) as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such config file.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    try:
        raw = apply_overrides({} if raw is None else raw, overrides)
        return raw, parse_config(raw, source)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> BuildConfig:
    """Read a YAML build config, apply ``--set`` style overrides, validate it.

    Raises:
        ConfigError: the file is missing or invalid; the message starts with its path.
    """
    return read_config(path, overrides)[1]


def apply_overrides(raw: Any, overrides: Sequence[str]) -> Any:
    """A copy of ``raw`` with each ``'key.path=value'`` set (value parsed as YAML).

    Missing mappings on the way are created; a list element is addressed by
    its index (``model.stax.0``).
    """
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(
                f"--set {item!r}: expected key.path=value, e.g. --set tiling.block_size=128."
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {e}") from None
        node = raw
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth]) or "the config"
            last = depth == len(parts) - 1
            if isinstance(node, dict):
                if last:
                    node[part] = value
                elif not isinstance(node.get(part), dict | list):
                    if node.get(part) is not None:
                        raise ConfigError(
                            f"--set {item!r}: {where}.{part} is {node[part]!r}, not a mapping."
                        )
                    node[part] = {}
                node = node[part]
            elif isinstance(node, list) and part.lstrip("-").isdigit():
                if not -len(node) <= int(part) < len(node):
                    raise ConfigError(
                        f"--set {item!r}: {where} has {len(node)} entries, no index {part}."
                    )
                if last:
                    node[int(part)] = value
                node = node[int(part)]
            else:
                raise ConfigError(f"--set {item!r}: {where} is {node!r}, not a mapping.")
    return raw


def parse_config(raw: Any, source: str = "<config>") -> BuildConfig:
    """Validate a config already read from YAML (see :mod:`bigntk.config._schema`)."""
    return _build_config(validate(raw), source)


def _build_config(config: ConfigFile, source: str) -> BuildConfig:
    data, ray = config.data, config.ray
    return BuildConfig(
        source=source,
        model=config.model.as_dict(),
        x1=_source(data.x1),
        x2=None if data.x2 is None else _source(data.x2),
        kernel=config.kernel.as_dict(),
        block_size=config.tiling.block_size,
        path=config.output.path,
        overwrite=config.output.overwrite,
        address=ray.address,
        workers=ray.workers,
        worker_resources=ray.worker_resources(),
        data_fingerprint=data.fingerprint,
    )


def _source(value: Any) -> Any:
    """A path as it is; a built-in dataset as ``{'name': ..., **options}``."""
    return value if isinstance(value, str) else value.as_source()


# --- loading -------------------------------------------------------------------------------


def _load_source(value: Any, name: str) -> Source:
    if isinstance(value, dict):
        options = {k: v for k, v in value.items() if k != "name"}
        return MemorySource(load_builtin(value["name"], **options)[0])
    return as_source(value, name)


def _init_stax(layers: list, seed: int, feature_shape: tuple[int, ...]) -> tuple[Callable, Any]:
    import jax

    from bigntk import stax

    init_fn, apply_fn, _ = stax.serial(*layers)
    try:
        with jax.enable_x64(False):  # the same float32 draws whether or not x64 is on
            _, params = init_fn(jax.random.PRNGKey(seed), (-1, *feature_shape))
    except Exception as e:
        raise ConfigError(
            f"model.stax: initialising the network for inputs of shape (n, "
            f"{', '.join(map(str, feature_shape))}) failed: {e}"
        ) from None
    as_f32 = lambda p: np.asarray(p, np.float32) if np.issubdtype(p.dtype, np.floating) else p  # noqa: E731
    return apply_fn, jax.tree.map(as_f32, params)


def _call_entry_point(fn: Callable, name: str, args: dict) -> tuple[Callable, Any]:
    try:
        out = fn(**args)
    except TypeError as e:
        raise ConfigError(f"model.args: calling {name}(**{args!r}) failed: {e}") from None
    if not (isinstance(out, tuple) and len(out) == 2 and callable(out[0])):
        fail(
            "model.entry_point",
            name,
            f"a function returning (apply_fn, params), it returned a {type(out).__name__}",
        )
    return out
