"""Validation at the edge: query strings and JSON bodies into typed structs, or a 400."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from service.entrypoints.api.errors import ApiError

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode


ASCII_NUMBER = re.compile(r"[0-9]{1,18}")
"""A whole number as the edge accepts it: ASCII digits only (no sign, point, exponent, or
other scripts' digits, which str.isdigit and int() would take), at most 18 of them."""


_INTEGER_FIELDS: dict[type, frozenset[str]] = {}


def _integer_fields(kind: type) -> frozenset[str]:
    """The query-string names of `kind`'s integer fields (worked out once per shape)."""
    if (known := _INTEGER_FIELDS.get(kind)) is not None:
        return known

    def is_int(t: msgspec.inspect.Type) -> bool:
        if isinstance(t, msgspec.inspect.Metadata):  # a description, say
            return is_int(t.type)
        if isinstance(t, msgspec.inspect.UnionType):
            return any(is_int(member) for member in t.types)
        return isinstance(t, msgspec.inspect.IntType)

    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    found = frozenset(f.encode_name for f in info.fields if is_int(f.type))
    _INTEGER_FIELDS[kind] = found
    return found


def parse_query(request: web.Request, kind: type[T]) -> T:
    """The query string as `kind`; repeated, unknown or invalid parameters are a 400.

    Integers are read here (ASCII digits only); everything else is converted strictly, so
    a string is never coerced: `status=null` is the string "null" (refused), not "absent".
    Query shapes hold strings, literals and integers only.
    """
    raw: dict[str, Any] = {}
    integers = _integer_fields(kind)
    for key, value in request.query.items():
        if key in raw:
            raise ApiError(400, "invalid_parameter", f"parameter {key!r} is given more than once")
        if key in integers:
            if not ASCII_NUMBER.fullmatch(value):
                raise ApiError(
                    400,
                    "invalid_parameter",
                    f"parameter {key!r} must be a whole number written with the digits 0-9",
                )
            raw[key] = int(value)
        else:
            raw[key] = value
    try:
        return msgspec.convert(raw, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_parameter", str(exc)) from None


async def parse_body(request: web.Request, kind: type[T]) -> T:
    """The JSON body as `kind`; not JSON, wrong types or a wrong media type are refused."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    body = await request.read()
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_body", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None


def respond(payload: Any, status: int = 200) -> web.Response:
    """A JSON response encoded by msgspec."""
    return web.Response(body=_encode(payload), status=status, content_type="application/json")
