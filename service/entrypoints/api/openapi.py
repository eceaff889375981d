"""The OpenAPI 3.1 document, generated from the route table and the msgspec shapes."""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec
from aiohttp import web

from service.entrypoints.api.routes import AUTH_ERRORS, ROUTES, Route
from service.entrypoints.api.schemas import ErrorResponse

_REF = "#/components/schemas/{name}"
_ID = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[A-Za-z0-9._:@\-]+$"}
_DESCRIPTIONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Bad input",
    401: "No or invalid token",
    403: "Role too low",
    404: "Not found",
    409: "Conflict",
    413: "Body too large",
    415: "Body is not JSON",
    429: "Rate limited (see Retry-After)",
    503: "Unavailable",
}


def _query_parameters(kind: type) -> list[dict[str, Any]]:
    params = []
    for f in msgspec.structs.fields(kind):
        schema = msgspec.json.schema(f.type)
        params.append(
            {"name": f.encode_name, "in": "query", "required": f.required, "schema": schema}
        )
    return params


def _content(route: Route, refs: dict[type, dict[str, Any]]) -> dict[str, Any]:
    if route.response is not None:
        return {route.content_type: {"schema": refs[route.response]}}
    if route.content_type == "application/json":
        return {"application/json": {"schema": {"type": "object"}}}
    return {route.content_type: {"schema": {"type": "string"}}}


def _operation(route: Route, refs: dict[type, dict[str, Any]]) -> dict[str, Any]:
    error = {"application/json": {"schema": refs[ErrorResponse]}}
    # Every authenticated route reads the database (the token, at least): 503 when it is down.
    statuses = set(route.errors) | (set(AUTH_ERRORS) | {503} if route.role is not None else set())
    if route.body is not None:
        statuses |= {400, 413, 415}
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{route.method}_{route.path}").strip("_"),
        "responses": {
            str(route.status): {
                "description": _DESCRIPTIONS[route.status],
                "content": _content(route, refs),
            }
        },
        "security": [{"bearerAuth": []}] if route.role is not None else [],
    }
    for status in route.also:
        op["responses"][str(status)] = {
            "description": _DESCRIPTIONS[status],
            "content": _content(route, refs),
        }
    if route.role is not None:
        op["description"] = f"Role: {route.role.name} or higher."
    for status in sorted(statuses):
        op["responses"][str(status)] = {"description": _DESCRIPTIONS[status], "content": error}
    params = (
        [{"name": "id", "in": "path", "required": True, "schema": _ID}]
        if "{id}" in route.path
        else []
    )
    if route.query is not None:
        params += _query_parameters(route.query)
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[route.body]}},
        }
    return op


@functools.cache
def document() -> dict[str, Any]:
    """The whole document (built once per process)."""
    kinds = [ErrorResponse] + [k for r in ROUTES for k in (r.response, r.body) if k is not None]
    kinds = list(dict.fromkeys(kinds))
    schemas, components = msgspec.json.schema_components(kinds, ref_template=_REF)
    refs = dict(zip(kinds, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "batchledger admin API",
            "version": "1.0.0",
            "description": "Monitor, audit and steer the OpenAI Batch pipeline. Errors are "
            '{"ok": false, "error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


async def serve_document(request: web.Request) -> web.Response:
    """GET /api/admin/legacy/openapi.json."""
    return web.json_response(document())
