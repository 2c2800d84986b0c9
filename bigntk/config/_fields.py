"""How a config field is checked, and how a failed check reads.

Every section of a config is a :class:`Section`: a strict pydantic model (a YAML
value is taken as it is, never coerced) that refuses unknown keys with a typo
suggestion. Each field carries the words of what it expects (:func:`expect`);
whatever pydantic finds wrong inside that field is reported as

    kernel.trace_axes: expected an int or a list of ints, e.g. [-1] or []; got 'a'.

:func:`config_error` turns pydantic's :class:`~pydantic.ValidationError` into one
:class:`~bigntk.errors.ConfigError` with one such line per problem.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, NoReturn

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bigntk._text import closest
from bigntk.errors import ConfigError

ERROR_TYPE = "bigntk_config"  # the pydantic error type of every message written here

PositiveInt = Annotated[StrictInt, Field(gt=0)]


def given_only(schema: dict) -> None:
    """``json_schema_extra`` of a field with no default but that may be left out."""
    schema.pop("default", None)


def shown(value: Any) -> str:
    """``repr(value)``, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def problem(message: str, key: str | None = None) -> PydanticCustomError:
    """An error whose text is ``message``; ``key``: the sub-key of the field it is about."""
    return PydanticCustomError(ERROR_TYPE, "{message}", {"message": message, "key": key})


def expected(what: str, value: Any, key: str | None = None) -> PydanticCustomError:
    """``problem('expected <what>; got <value>.')``."""
    return problem(f"expected {what}; got {shown(value)}.", key)


def fail(field: str, value: Any, what: str) -> NoReturn:
    """Raise ``ConfigError('<field>: expected <what>; got <value>.')`` (outside validation)."""
    raise ConfigError(f"{field}: expected {what}; got {shown(value)}.")


def expect(what: str) -> WrapValidator:
    """Field metadata: any failure of pydantic's own checks reads ``expected <what>; got <value>``.

    Errors written here by validators deeper in the field (a layer of a list,
    a key of a built-in dataset) keep their own text and place.
    """

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as e:
            if all(err["type"] == ERROR_TYPE for err in e.errors()):
                raise
            raise expected(what, value) from None

    return WrapValidator(check)


class Section(BaseModel):
    """A mapping of a config: null reads as empty, unknown keys are refused.

    ``_required`` names the fields that must be given (not null), each with
    what it expects.
    """

    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True
    )
    _required: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, raw: Any) -> Any:
        keys = tuple(cls.model_fields)
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise expected(f"a mapping with the keys {list(keys)}", raw)
        check_keys(raw, keys)
        for key, what in cls._required.items():
            if raw.get(key) is None:
                raise expected(what, None, key)
        return cls._check(raw)

    @classmethod
    def _check(cls, raw: dict) -> dict:
        """Checks of the raw mapping before its fields (subclasses)."""
        return raw


def check_keys(raw: dict, valid: tuple[str, ...]) -> None:
    """Refuse the first key of ``raw`` not in ``valid``, naming the closest valid one."""
    for key in raw:
        if key not in valid:
            close = closest(str(key), valid)
            hint = f"; did you mean {close!r}?" if close else "."
            raise problem(f"unknown key{hint} Valid keys here: {', '.join(valid)}.", str(key))


# --- pydantic's errors as one ConfigError --------------------------------------------------


def config_error(error: ValidationError) -> ConfigError:
    """One line per problem (in the order found, repeats dropped): ``<field path>: <message>``."""
    lines = dict.fromkeys(_line(err) for err in error.errors(include_url=False))
    return ConfigError("\n".join(lines))


def _line(err: Any) -> str:
    path = field_path(err["loc"])
    if err["type"] != ERROR_TYPE:  # not expected: every field names what it expects
        return f"{path or 'the config'}: {err['msg']}; got {shown(err['input'])}."
    key, message = err["ctx"]["key"], err["ctx"]["message"]
    if key is not None:
        return f"{path}.{key}: {message}" if path else f"{key}: {message}"
    return f"{path or 'the config'}: {message}"


def field_path(loc: tuple[int | str, ...]) -> str:
    """``('model', 'stax', 1)`` -> ``'model.stax[1]'``.

    Union tags (``'<digits>'``: never identifiers, unlike field names) are left out.
    """
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier():
            path += f".{part}" if path else part
    return path
