"""Validation at the edge: query strings and JSON bodies into typed structs, or a 400."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from aiohttp import web

from service.entrypoints.api.errors import ApiError

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode


def parse_query(request: web.Request, kind: type[T]) -> T:
    """The query string as `kind`; repeated, unknown or invalid parameters are a 400."""
    raw: dict[str, str] = {}
    for key, value in request.query.items():
        if key in raw:
            raise ApiError(400, "invalid_parameter", f"parameter {key!r} is given more than once")
        raw[key] = value
    try:
        return msgspec.convert(raw, kind, strict=False)
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
