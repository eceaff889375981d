"""Request parameters checked as OpenAI checks them, with OpenAI's error codes and wording."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class ParamError(ValueError):
    """A parameter OpenAI would refuse: its message, `param` path and error `code`."""

    def __init__(self, message: str, param: str | None, code: str | None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass(frozen=True)
class Str:
    """A string, optionally one of `choices`."""

    min_length: int = 0
    max_length: int | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Int:
    """A whole number within [ge, le]."""

    ge: int | None = None
    le: int | None = None


@dataclass(frozen=True)
class Obj:
    """An object: named `fields` (those in `required` must be present), or a map of `values`."""

    fields: Mapping[str, Spec] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    values: Spec | None = None  # a map such as metadata: any key, each value this
    max_properties: int | None = None
    max_key_length: int | None = None


Spec = Str | Int | Obj


def kind(value: Any) -> str:
    """The JSON type of `value` with its article, as OpenAI's messages name it."""
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a decimal"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
    return "an unknown type"


_EXPECTED = {Str: "a string", Int: "an integer", Obj: "an object"}


def supported(values: Sequence[str]) -> str:
    """'a', 'b', and 'c' — OpenAI's list of supported values."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def invalid(param: str, problem: str, detail: str, code: str) -> ParamError:
    """OpenAI's "Invalid '<param>': <problem>. <detail>" error."""
    return ParamError(f"Invalid '{param}': {problem}. {detail}", param, code)


def missing(param: str) -> ParamError:
    """A required parameter that is absent."""
    return ParamError(
        f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    )


def invalid_value(value: str, choices: Sequence[str], param: str) -> ParamError:
    """A value outside an enumeration."""
    return ParamError(
        f"Invalid value: '{value}'. Supported values are: {supported(choices)}.",
        param,
        "invalid_value",
    )


def wrong_type(param: str, expected: str, value: Any) -> ParamError:
    """A value of the wrong JSON type."""
    return ParamError(
        f"Invalid type for '{param}': expected {expected}, but got {kind(value)} instead.",
        param,
        "invalid_type",
    )


def check(value: Any, spec: Spec, param: str) -> None:
    """Raise the ParamError OpenAI would answer for `value` at `param`, if any."""
    expected = _EXPECTED[type(spec)]
    valid_type = {
        Str: isinstance(value, str),
        Int: isinstance(value, int) and not isinstance(value, bool),
        Obj: isinstance(value, dict),
    }[type(spec)]
    if not valid_type:
        raise wrong_type(param, expected, value)
    match spec:
        case Str():
            _check_str(value, spec, param)
        case Int():
            _check_int(value, spec, param)
        case Obj():
            check_object(value, spec, param)


def _check_str(value: str, spec: Str, param: str) -> None:
    if spec.choices and value not in spec.choices:
        raise invalid_value(value, spec.choices, param)
    if len(value) < spec.min_length:
        raise invalid(
            param,
            "empty string",
            f"Expected a string with minimum length {spec.min_length}, "
            "but got an empty string instead.",
            "empty_string",
        )
    if spec.max_length is not None and len(value) > spec.max_length:
        raise invalid(
            param,
            "string too long",
            f"Expected a string with maximum length {spec.max_length}, "
            f"but got a string with length {len(value)} instead.",
            "string_above_max_length",
        )


def _check_int(value: int, spec: Int, param: str) -> None:
    if spec.ge is not None and value < spec.ge:
        raise invalid(
            param,
            "integer below minimum value",
            f"Expected a value >= {spec.ge}, but got {value} instead.",
            "integer_below_min_value",
        )
    if spec.le is not None and value > spec.le:
        raise invalid(
            param,
            "integer above maximum value",
            f"Expected a value <= {spec.le}, but got {value} instead.",
            "integer_above_max_value",
        )


def _path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def check_object(value: dict[str, Any], spec: Obj, param: str = "") -> None:
    """Check an object's keys and values; `param` is its path ('' for a request body)."""
    if spec.max_properties is not None and len(value) > spec.max_properties:
        raise invalid(
            param,
            "too many properties",
            f"Expected an object with at most {spec.max_properties} properties, "
            f"but got an object with {len(value)} properties instead.",
            "object_above_max_properties",
        )
    for key, item in value.items():
        if item is None and spec.values is None and key not in spec.required:
            continue  # OpenAI reads an optional parameter sent as null as absent
        sub = spec.values if spec.values is not None else spec.fields.get(key)
        if sub is None:
            raise ParamError(
                f"Unrecognized request argument supplied: {_path(param, key)}", None, None
            )
        if spec.max_key_length is not None and len(key) > spec.max_key_length:
            raise invalid(
                param,
                "key too long",
                f"Expected a key with maximum length {spec.max_key_length}, "
                f"but got a key with length {len(key)} instead.",
                "invalid_value",
            )
        check(item, sub, _path(param, key))
    for key in spec.required:
        if key not in value:
            raise missing(_path(param, key))
