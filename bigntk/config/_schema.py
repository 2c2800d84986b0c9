"""The build config schema: typed models of a config read from YAML.

A config has the sections ``model`` (:mod:`bigntk.config._model`), ``data``
(:mod:`bigntk.config._sources`), ``kernel``, ``tiling``, ``output`` and ``ray``;
all but ``model``, ``data`` and ``output`` may be left out, and a null section
is an empty one. Each field's docstring below says what it means; the README
shows a whole config, and :func:`json_schema` is the same schema for editors.

Relative paths (data and output) are resolved against the current working
directory, not the config file's; data paths must exist. Every failure is a
:class:`~bigntk.errors.ConfigError` naming the field, the value and what is
expected (see :mod:`bigntk.config._fields`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from bigntk.build import KINDS, WorkerResources
from bigntk.config._fields import (
    PositiveInt,
    Section,
    check_keys,
    config_error,
    expect,
    expected,
    problem,
)
from bigntk.config._model import ModelSection
from bigntk.config._sources import DataSection, resolve
from bigntk.empirical import DEFAULT_NTK_IMPLEMENTATION, NtkImplementation
from bigntk.errors import BuildInputError

# --- kernel, tiling, output, ray -----------------------------------------------------------


def _unique(kinds: str | list[str]) -> tuple[str, ...]:
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if len(set(kinds)) != len(kinds):
        raise ValueError("repeated")
    return tuple(kinds)


_IMPLEMENTATIONS = {m.name.lower(): int(m) for m in NtkImplementation}


def _implementation(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("not a bool")
    return value.lower() if isinstance(value, str) else value


Kind = Literal[tuple(KINDS)]
Axes = Annotated[
    StrictInt | list[StrictInt],
    AfterValidator(lambda axes: (axes,) if isinstance(axes, int) else tuple(axes)),
    expect("an int or a list of ints, e.g. [-1] or []"),
]


class KernelSection(Section):
    """What is computed, as in bigntk.empirical_kernel_fn."""

    kinds: Annotated[
        Kind | Annotated[list[Kind], Field(min_length=1, json_schema_extra={"uniqueItems": True})],
        AfterValidator(_unique),
        expect(f"a list of {list(KINDS)} without repeats"),
    ] = ("ntk",)
    """The kernels, each stored as its own array."""
    trace_axes: Axes = (-1,)
    """Output axes summed over (traced)."""
    diagonal_axes: Axes = ()
    """Output axes of which only the diagonal is kept."""
    vmap_axes: Annotated[
        StrictInt | None,
        expect("an int (the batch axis, asserting examples are independent) or null (prove it)"),
    ] = None
    """The batch axis, asserting examples are independent; null: prove it, else refuse."""
    implementation: Annotated[
        Literal[tuple(_IMPLEMENTATIONS.values())] | Literal[tuple(_IMPLEMENTATIONS)],
        BeforeValidator(_implementation),
        AfterValidator(lambda impl: _IMPLEMENTATIONS.get(impl, impl)),
        expect(f"one of {sorted(_IMPLEMENTATIONS.values())} or {list(_IMPLEMENTATIONS)}"),
    ] = int(DEFAULT_NTK_IMPLEMENTATION)
    """A bigntk.NtkImplementation, by number or name (0 = auto)."""

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in type(self).model_fields}


class TilingSection(Section):
    """How the kernel is cut into blocks."""

    block_size: Annotated[PositiveInt | None, expect("a positive int or null")] = None
    """Rows (and columns) of one block; null: about a second of work per block (from its FLOPs)."""


class OutputSection(Section):
    """Where the kernel is stored."""

    _required = {"path": "the store's path, e.g. kernels/k.zarr"}
    path: Annotated[
        StrictStr, Field(min_length=1), AfterValidator(resolve), expect(_required["path"])
    ]
    """The Zarr store: a path (relative: against the current directory) or an fsspec URL."""
    overwrite: Annotated[StrictBool, expect("true or false")] = False
    """Replace a store built from another spec (else that is an error)."""


NonNegative = Annotated[float, Field(ge=0)]  # strict: an int is taken, a bool or a string is not


class RaySection(Section):
    """The Ray cluster, and each worker's resources (see bigntk.build.WorkerResources)."""

    address: Annotated[StrictStr | None, expect("a string or null")] = None
    """null: a new local Ray on this machine; 'auto', ray://..., or a head's address."""
    workers: Annotated[PositiveInt | None, expect("a positive int or null")] = None
    """null: one per GPU, else one."""
    num_cpus: Annotated[NonNegative | None, expect("a number >= 0 or null")] = None
    """Ray's logical CPUs per worker (default 1)."""
    num_gpus: Annotated[NonNegative | None, expect("a number >= 0 or null")] = None
    """A fraction below 1 shares a GPU; null: cluster GPUs // workers."""
    resources: Annotated[
        dict[str, Annotated[float, Field(gt=0)]] | None,
        expect("a mapping of custom Ray resources to amounts > 0, e.g. {TPU: 4}, or null"),
    ] = None
    """Other Ray resources per worker, e.g. {TPU: 4}."""
    memory_fraction: Annotated[
        Annotated[float, Field(gt=0, le=1)] | None,
        expect("a number in (0, 1], e.g. 0.45, or null"),
    ] = None
    """XLA_PYTHON_CLIENT_MEM_FRACTION of each worker."""

    @model_validator(mode="after")
    def _worker_resources(self) -> RaySection:
        try:
            WorkerResources.coerce(self.worker_resources())
        except BuildInputError as e:
            raise problem(str(e)) from None
        return self

    def worker_resources(self) -> dict:
        """The per-worker settings given (not null)."""
        keys = ("num_cpus", "num_gpus", "resources", "memory_fraction")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


# --- the config ----------------------------------------------------------------------------


class ConfigFile(BaseModel):
    """A bigntk build config (`bigntk build CONFIG.yaml`)."""

    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, use_attribute_docstrings=True
    )
    model: ModelSection
    data: DataSection
    kernel: KernelSection = Field(default_factory=KernelSection)
    tiling: TilingSection = Field(default_factory=TilingSection)
    output: OutputSection
    ray: RaySection = Field(default_factory=RaySection)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise expected(f"a mapping with the sections {list(cls.model_fields)}", raw)
        check_keys(raw, tuple(cls.model_fields))
        return {name: raw.get(name) for name in cls.model_fields}  # null: an empty section


_SECTIONS = {
    name: tuple(field.annotation.model_fields) for name, field in ConfigFile.model_fields.items()
}


def validate(raw: Any) -> ConfigFile:
    """A config already read from YAML, checked.

    Raises:
        ConfigError: one line per problem, each naming the field, the value and what is expected.
    """
    try:
        return ConfigFile.model_validate(raw)
    except ValidationError as e:
        raise config_error(e) from None


def json_schema() -> dict[str, Any]:
    """The JSON schema of a build config, for editors.

    Committed as configs/bigntk-config.schema.json (``python -m bigntk.config`` prints it).
    Draft 7, the newest the YAML language server (VS Code's YAML extension) reads:
    pydantic's ``$defs`` are only JSON pointers there, and no newer keyword is used.
    """
    schema = ConfigFile.model_json_schema()
    return {"$schema": "http://json-schema.org/draft-07/schema#", **schema}
