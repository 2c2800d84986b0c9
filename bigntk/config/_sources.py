"""The ``data`` section of a config: the inputs x1 and x2 (paths, or built-in datasets)."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    StrictInt,
    StrictStr,
    Tag,
    model_validator,
)

from bigntk.config._datasets import BUILTIN_KEYS, DIGITS_SPLITS
from bigntk.config._fields import PositiveInt, Section, expect, expected
from bigntk.store import is_url


def resolve(path: str) -> str:
    """An absolute path (relative to the current directory); URLs are kept as they are."""
    if is_url(path):
        return path
    store, sep, array = path.removeprefix("file://").partition("::")
    return os.path.abspath(store) + sep + array


def _existing(path: str) -> str:
    resolved = resolve(path)
    if not is_url(path) and not os.path.exists(resolved.partition("::")[0]):
        raise expected(
            "an existing .npy file or Zarr store (relative paths are resolved against the "
            f"current directory, {os.getcwd()})",
            path,
        )
    return resolved


class DigitsData(Section):
    """scikit-learn's 8x8 digits (bundled, not downloaded): float32 (N, 8, 8, 1) in [0, 1]."""

    builtin: Literal["digits"]
    split: Annotated[Literal[tuple(DIGITS_SPLITS)], expect(f"one of {list(DIGITS_SPLITS)}")] = "all"
    """train: the first 1,500 images; test: the other 297; all: both."""
    n: Annotated[PositiveInt | None, expect("a positive int or null")] = None
    """Keep the first n images of the split; null: all of them."""

    @model_validator(mode="after")
    def _fits(self) -> DigitsData:
        size = DIGITS_SPLITS[self.split].stop - DIGITS_SPLITS[self.split].start
        if self.n is not None and self.n > size:
            what = f"at most {size} (the size of the digits {self.split!r} split)"
            raise expected(what, self.n, "n")
        return self

    def as_source(self) -> dict:
        return {"name": "digits", "split": self.split, "n": self.n}


class SyntheticData(Section):
    """Standard normal float32 data of a given shape, drawn from a seed."""

    builtin: Literal["synthetic"]
    shape: Annotated[
        list[PositiveInt], Field(min_length=1), expect("a list of positive ints [N, *features]")
    ]
    """[N, *features]: N examples."""
    seed: Annotated[StrictInt, expect("an int")] = 0

    def as_source(self) -> dict:
        return {"name": "synthetic", "shape": list(self.shape), "seed": self.seed}


def _source_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "<path>"
    return f"<{value.get('builtin')}>" if isinstance(value, dict) else None


def _known_builtin(value: Any) -> Any:
    if isinstance(value, dict) and value.get("builtin") not in BUILTIN_KEYS:
        raise expected(f"one of {list(BUILTIN_KEYS)}", value.get("builtin"), "builtin")
    return value


DataPath = Annotated[StrictStr, Field(min_length=1), AfterValidator(_existing)]
# one member per form, chosen by _source_tag; the tags are not identifiers, so they stay out
# of the field paths of errors (see bigntk.config._fields.field_path)
Source = Annotated[
    Union[  # noqa: UP007 (tagged members)
        Annotated[DataPath, Tag("<path>")],
        Annotated[DigitsData, Tag("<digits>")],
        Annotated[SyntheticData, Tag("<synthetic>")],
    ],
    Discriminator(_source_tag),
    BeforeValidator(_known_builtin),
    expect(
        "a .npy path, a Zarr path (store.zarr or store.zarr::array), or "
        "{builtin: digits | synthetic, ...}"
    ),
]


class DataSection(Section):
    """The inputs: K(x1, x2) is built, of shape (n1, n2, *out)."""

    _required = {"x1": "the inputs: a .npy or Zarr path, or {builtin: digits}"}
    x1: Source
    """A .npy file, a Zarr store (store.zarr or store.zarr::array), an fsspec URL, or a
    built-in dataset. Relative paths: against the current directory."""
    x2: Source | None = None
    """null: the symmetric K(x1, x1), only blocks i <= j computed; else the same forms as x1."""
    fingerprint: Annotated[Literal["full", "sample"], expect("one of ['full', 'sample']")] = "full"
    """full: hash every row (at each run); sample: 64 rows."""
