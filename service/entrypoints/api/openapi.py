"""The OpenAPI 3.1 document, generated from the route table and the msgspec shapes.

What JSON Schema cannot say (the transcript format, time bounds, the whole-body limit,
opaque cursors) is said in descriptions; everything it can say, it says: every status a
route can answer, the headers each answer carries, and the links a client follows.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec
from aiohttp import web

from service.entrypoints.api.app import MAX_BODY_BYTES
from service.entrypoints.api.routes import AUTH_ERRORS, BASE, ROUTES, Route
from service.entrypoints.api.schemas import EnqueueBody, ErrorResponse, RequeueBody, TokenBody

_REF = "#/components/schemas/{name}"
_ID = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[A-Za-z0-9._:@\-]+$"}
_MIB = MAX_BODY_BYTES / (1024 * 1024)
_LIMIT = f"at most {MAX_BODY_BYTES} bytes ({_MIB:g} MiB) as sent"
_DESCRIPTIONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Bad input: a query parameter (unknown, repeated, wrong type, out of range), the path"
    " id, a header or the body (`invalid_parameter`, `invalid_cursor`, `invalid_body`,"
    " `malformed_json`, `invalid_transcript`, `invalid_last_event_id`)",
    401: "No token, or an unknown, wrong, revoked or expired one (`unauthorized`)",
    403: "The token's role is too low for this route (`forbidden`)",
    404: "Not found (`not_found`)",
    408: "The body did not arrive within the body timeout (`request_timeout`); the"
    " connection is closed",
    409: "Conflict",
    413: f"The body is over {_LIMIT} (`payload_too_large`); it is not read",
    415: "The body is not `application/json` (`unsupported_media_type`)",
    429: "Rate limited (`rate_limited`): the token's requests per minute, or failed"
    " authentications from this address or for this token id; `Retry-After` says how many"
    " seconds to wait",
    503: "The database is unreachable (`database_unavailable`) or the writer lock is busy"
    " (`writer_busy`, nothing recorded); retry after `Retry-After`",
}
_IN_SCOPE = "outside the token's companies, as for one that does not exist"
_NOTES: dict[tuple[str, str], dict[int, str]] = {
    ("GET", f"{BASE}/summary"): {404: f"`companyId` is {_IN_SCOPE} (`not_found`)"},
    ("GET", f"{BASE}/requests"): {404: f"`companyId` is {_IN_SCOPE} (`not_found`)"},
    ("POST", f"{BASE}/requests/requeue"): {
        200: "Counted: requeued, not found (a request of a company outside the token's"
        " companies counts as not found) and skipped (not in `processing_failed`)",
        409: "The requests kept changing over every attempt (`conflict`); try again",
    },
    ("POST", f"{BASE}/requests"): {
        200: "The company's session was queued before: its request, `created` false",
        201: "Queued: a new request, `created` true",
        403: "The token's role is too low, or `companyId` is outside the token's companies"
        " (`forbidden`)",
        409: "The request's stream changed meanwhile (`conflict`); try again",
    },
    ("GET", f"{BASE}/requests/{{id}}"): {404: f"No such request, or one of a company {_IN_SCOPE}"},
    ("GET", f"{BASE}/requests/{{id}}/history"): {
        404: f"No such request, or one of a company {_IN_SCOPE}"
    },
    ("GET", f"{BASE}/batches/{{id}}"): {404: f"No such batch, or one of a company {_IN_SCOPE}"},
    ("GET", f"{BASE}/batches/{{id}}/history"): {
        404: f"No such batch, or one of a company {_IN_SCOPE}"
    },
    ("POST", f"{BASE}/batches/{{id}}/cancel"): {
        202: "Cancelling: the cancel is recorded, then sent to OpenAI (`openaiCancel` says"
        " whether OpenAI took it, or the poller sends it again)",
        404: f"No such batch, or one of a company {_IN_SCOPE}",
        409: "The batch is not running at OpenAI (`not_cancellable`), or it changed meanwhile"
        " (`conflict`, `invalid_transition`)",
        503: "The database is unreachable (`database_unavailable`) or the writer lock is busy"
        " (`writer_busy`, nothing recorded); retry after `Retry-After`",
    },
    ("GET", f"{BASE}/events/stream"): {
        400: "Bad input: a query parameter, or a `Last-Event-ID` that is not an event position"
        " (`invalid_parameter`, `invalid_last_event_id`)",
    },
    ("POST", f"{BASE}/tokens"): {
        403: "The token's role is too low, or the new token would reach companies the caller"
        " does not: every company, granted by a caller limited to companies, or a company"
        " outside the caller's (`forbidden`)",
        409: "The name is used or was ever used (in any case), or is reserved for the"
        " service's own actors (`token_name_taken`)",
    },
    ("POST", f"{BASE}/tokens/{{id}}/revoke"): {
        404: "No active token of that name (within the caller's companies)",
    },
    ("GET", "/readyz"): {
        503: "Not ready: the database does not answer or migrations are pending (`checks`)",
    },
}

_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-Id": {
        "description": "The request's id: the client's `X-Request-Id` when it sent one of"
        " 1-100 printable characters, else a generated one. Writes record it as the"
        " correlation id of the events they append.",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 100},
    },
    "Retry-After": {
        "description": "How many seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": "The scheme to authenticate with: a bearer token.",
        "required": True,
        "schema": {"type": "string", "const": "Bearer"},
    },
}
_HEADER_REF = "#/components/headers/{name}"
_PARAMETERS: dict[str, dict[str, Any]] = {
    "X-Request-Id": {
        "name": "X-Request-Id",
        "in": "header",
        "required": False,
        "description": "Optional id of the request, echoed in the `X-Request-Id` response header"
        " and recorded as the correlation id of the events a write appends. Any value is"
        " accepted: one that is not 1-100 printable characters is replaced by a generated id.",
        "schema": {"type": "string"},
    },
    "Last-Event-ID": {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": "The `id` of the last event the client received (an event position,"
        " ASCII digits): the stream resumes after it, with no gap and no duplicate, and it"
        " takes the place of `after`. Browsers send it by themselves when they reconnect."
        " A position past the newest event is a 400 `invalid_last_event_id`.",
        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    },
}
_PARAMETER_REF = "#/components/parameters/{name}"

# The event stream. OpenAPI 3.1 has no word for the items of a stream (3.2 adds
# `itemSchema`); tools that read one (schemathesis among them) take the schema of a
# `text/event-stream` response as the schema of each event, parsed into its `id`, `event`
# and `data` fields. A bare `{"type": "string"}` would say each event is a JSON string,
# which is what finding 16 of issue 13 objected to: so the schema is that of one event,
# and `data` is declared as JSON text holding an EventItem.
_FRAMES = (
    "Server-Sent Events (text, UTF-8). Each event is one frame: `id: <position>`,"
    " `event: <type>`, `data: <the event as in /events, one line of JSON>`, then a blank"
    " line. Lines starting with `:` are comments: `: connected` when the stream opens,"
    " `: keepalive` every `SSE_HEARTBEAT_SECONDS` while nothing happens, and a last one"
    " when the token is revoked or expires (the stream then ends). Reconnect with"
    " `Last-Event-ID` to resume after the last event received."
)
_EVENT_FRAME = {
    "description": "One event of the stream, as its frame's fields read. " + _FRAMES,
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "The event's position; send it back as `Last-Event-ID`.",
        },
        "event": {
            "type": "string",
            "pattern": "^[A-Za-z0-9]+$",
            "description": "The event's type.",
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": _REF.format(name="EventItem")},
            "description": "The event as `GET /events` gives it, as one line of JSON.",
        },
    },
}

# The whole-body limit (MAX_BODY_BYTES, enforced by aiohttp before a body is parsed) is
# stated on every request body, and the per-field maxima stay what the server enforces.
# JSON Schema cannot bound the size of the encoded body, and no per-field maxima can
# guarantee that a valid body fits: JSON escapes and UTF-8 make one character up to six
# bytes, so a guarantee would need messages of ~170 characters, which real sessions
# exceed. So `POST /requests` may hold up to 1000 messages, each of up to 20,000
# characters, as long as the whole body fits: the description says so and 413 answers
# the rest.
_BODY_LIMIT = (
    f"The whole body is {_LIMIT}, whatever the maxima of its fields allow; a longer one is"
    " refused with 413 before it is parsed."
)
_EXAMPLES: dict[type, dict[str, Any]] = {
    RequeueBody: {"failed": {"value": {"requestIds": ["req_0a1b2c3d4e5f", "req_6a7b8c9d0e1f"]}}},
    EnqueueBody: {
        "messages": {
            "summary": "A session as messages",
            "value": {
                "companyId": "acme",
                "sessionId": "LD-2025-0001",
                "messages": [
                    {"role": "User", "content": "When is payday?", "at": "2025-10-01T08:40:19Z"},
                    {
                        "role": "Assistant",
                        "content": "On the 25th.\nIf that is a weekend, the Friday before.",
                        "at": "2025-10-01T10:40:25+02:00",
                    },
                ],
            },
        },
        "transcript": {
            "summary": "A session as a LiveDash transcript",
            "value": {
                "companyId": "acme",
                "sessionId": "LD-2025-0002",
                "transcript": "[01.10.2025 08:40:19] User: Can I swap my shift?\n"
                "[01.10.2025 08:40:25] Assistant: Yes, ask your team lead.",
                "model": "gpt-4o-mini",
            },
        },
    },
    TokenBody: {
        "scoped": {
            "summary": "A support token limited to one company, expiring in 90 days",
            "value": {
                "name": "integrator-acme",
                "role": "support",
                "companies": ["acme"],
                "expiresIn": "90d",
            },
        },
    },
}
"""Request bodies as a client sends them (each one valid: the examples phase sends them)."""
_EXACTLY_ONE = [
    {"required": ["transcript"], "properties": {"transcript": {"type": "string"}}},
    {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
]
"""EnqueueBody: exactly one of `transcript` and `messages` is given (and not null)."""


def _op_id(method: str, path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{method}_{path}").strip("_")


def _link(method: str, path: str, **parameters: str) -> dict[str, Any]:
    """A link that carries the request id on, so a chain of calls shares one correlation."""
    return {
        "operationId": _op_id(method, path),
        "parameters": {**parameters, "header.X-Request-Id": "$response.header.X-Request-Id"},
    }


_REQUEST = f"{BASE}/requests/{{id}}"
_BATCH = f"{BASE}/batches/{{id}}"
_LINKS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("POST", f"{BASE}/requests"): {
        "GetRequest": _link("GET", _REQUEST, id="$response.body#/requestId"),
        "GetRequestHistory": _link("GET", f"{_REQUEST}/history", id="$response.body#/requestId"),
        "RequeueRequest": {
            **_link("POST", f"{BASE}/requests/requeue"),
            "requestBody": {"requestIds": ["$response.body#/requestId"]},
        },
        "ListCompanyRequests": _link(
            "GET",
            f"{BASE}/requests",
            status="pending_batching",
            companyId="$request.body#/companyId",
        ),
    },
    ("GET", f"{BASE}/requests"): {
        "NextPage": _link(
            "GET",
            f"{BASE}/requests",
            cursor="$response.body#/nextCursor",
            status="$request.query.status",
            limit="$request.query.limit",
            companyId="$request.query.companyId",
            batchId="$request.query.batchId",
        ),
        "GetFirstRequest": _link("GET", _REQUEST, id="$response.body#/requests/0/id"),
        "RequeueFirstRequest": {
            **_link("POST", f"{BASE}/requests/requeue"),
            "requestBody": {"requestIds": ["$response.body#/requests/0/id"]},
        },
    },
    ("GET", _REQUEST): {
        "GetRequestHistory": _link("GET", f"{_REQUEST}/history", id="$response.body#/request/id"),
        "GetBatch": _link("GET", _BATCH, id="$response.body#/request/batchId"),
    },
    ("GET", f"{BASE}/batches"): {
        "NextPage": _link(
            "GET",
            f"{BASE}/batches",
            cursor="$response.body#/nextCursor",
            status="$request.query.status",
            limit="$request.query.limit",
        ),
        "GetFirstBatch": _link("GET", _BATCH, id="$response.body#/batches/0/id"),
        "GetFirstBatchHistory": _link(
            "GET", f"{_BATCH}/history", id="$response.body#/batches/0/id"
        ),
        "CancelFirstBatch": _link("POST", f"{_BATCH}/cancel", id="$response.body#/batches/0/id"),
    },
    ("GET", _BATCH): {
        "GetBatchHistory": _link("GET", f"{_BATCH}/history", id="$response.body#/batch/id"),
        "CancelBatch": _link("POST", f"{_BATCH}/cancel", id="$response.body#/batch/id"),
        "ListBatchRequests": _link(
            "GET",
            f"{BASE}/requests",
            status="batching_in_progress",
            batchId="$response.body#/batch/id",
        ),
    },
    ("POST", f"{_BATCH}/cancel"): {
        "GetBatch": _link("GET", _BATCH, id="$response.body#/batchId"),
    },
    ("GET", f"{BASE}/events"): {
        "NextPage": _link(
            "GET",
            f"{BASE}/events",
            after="$response.body#/nextAfter",
            limit="$request.query.limit",
            type="$request.query.type",
            category="$request.query.category",
        ),
    },
    ("POST", f"{BASE}/tokens"): {
        # Only a token this chain created is revoked: never the caller's own.
        "RevokeToken": _link("POST", f"{BASE}/tokens/{{id}}/revoke", id="$response.body#/name"),
    },
}


def _query_parameters(kind: type) -> list[dict[str, Any]]:
    params = []
    for f in msgspec.structs.fields(kind):
        schema = msgspec.json.schema(f.type)
        # A query string cannot carry null: an optional parameter is absent, never null
        # (`status=null` is the string "null"), so its schema is the value's alone.
        members = [m for m in schema.get("anyOf", []) if m != {"type": "null"}]
        if len(schema) == 1 and len(members) == 1:
            schema = members[0]
        params.append(
            {"name": f.encode_name, "in": "query", "required": f.required, "schema": schema}
        )
    return params


def _content(route: Route, refs: dict[type, dict[str, Any]]) -> dict[str, Any]:
    if route.response is not None:
        return {route.content_type: {"schema": refs[route.response]}}
    if route.content_type == "text/event-stream":
        return {route.content_type: {"schema": _EVENT_FRAME}}
    if route.content_type == "application/json":
        return {"application/json": {"schema": {"type": "object"}}}
    return {route.content_type: {"schema": {"type": "string"}}}


def _headers(status: int, *, error: bool) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-Id": {"$ref": _HEADER_REF.format(name="X-Request-Id")}}
    if error and status in (429, 503):
        headers["Retry-After"] = {"$ref": _HEADER_REF.format(name="Retry-After")}
    if error and status == 401:
        headers["WWW-Authenticate"] = {"$ref": _HEADER_REF.format(name="WWW-Authenticate")}
    return headers


def _operation(route: Route, refs: dict[type, dict[str, Any]]) -> dict[str, Any]:
    error = {"application/json": {"schema": refs[ErrorResponse]}}
    # Every authenticated route reads the database (the token, at least): 503 when it is down.
    statuses = set(route.errors) | (set(AUTH_ERRORS) | {503} if route.role is not None else set())
    if route.body is not None:
        statuses |= {400, 408, 413, 415}
    key = (route.method, route.path)
    notes = _NOTES.get(key, {})
    links = _LINKS.get(key)
    responses: dict[str, Any] = {}
    streamed = route.content_type == "text/event-stream"
    for status in (route.status, *route.also):
        responses[str(status)] = {
            "description": _FRAMES if streamed else notes.get(status, _DESCRIPTIONS[status]),
            "headers": _headers(status, error=False),
            "content": _content(route, refs),
        }
        if links and status < 300:
            responses[str(status)]["links"] = links
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": notes.get(status, _DESCRIPTIONS[status]),
            "headers": _headers(status, error=True),
            "content": error,
        }
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": _op_id(route.method, route.path),
        "responses": responses,
        "security": [{"bearerAuth": []}] if route.role is not None else [],
    }
    if route.role is not None:
        op["description"] = f"Role: {route.role.name} or higher."
    params: list[dict[str, Any]] = [{"$ref": _PARAMETER_REF.format(name="X-Request-Id")}]
    if "{id}" in route.path:
        params.append({"name": "id", "in": "path", "required": True, "schema": _ID})
    if route.query is not None:
        params += _query_parameters(route.query)
    if route.content_type == "text/event-stream":
        params.append({"$ref": _PARAMETER_REF.format(name="Last-Event-ID")})
    op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "description": _BODY_LIMIT,
            "content": {
                "application/json": {
                    "schema": refs[route.body],
                    "examples": _EXAMPLES[route.body],
                }
            },
        }
    return op


def _body_components(components: dict[str, Any]) -> None:
    """State the whole-body limit on every body shape, and EnqueueBody's one-of rule."""
    for route in ROUTES:
        if route.body is None:
            continue
        shape = components[route.body.__name__]
        shape["description"] = f"{shape.get('description', '').rstrip()} {_BODY_LIMIT}".strip()
        if route.body is EnqueueBody:
            shape["oneOf"] = _EXACTLY_ONE
            shape["description"] += (
                " Exactly one of `transcript` and `messages` is given."
                " A request is accepted only if the transcript parses, or each message is one"
                " turn, by the rules in the descriptions of `transcript` and of MessageIn"
                " (a 400 names the part that breaks them)."
            )


@functools.cache
def document() -> dict[str, Any]:
    """The whole document (built once per process)."""
    kinds = [ErrorResponse] + [k for r in ROUTES for k in (r.response, r.body) if k is not None]
    kinds = list(dict.fromkeys(kinds))
    schemas, components = msgspec.json.schema_components(kinds, ref_template=_REF)
    refs = dict(zip(kinds, schemas, strict=True))
    _body_components(components)
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "batchledger admin API",
            "version": "1.0.0",
            "description": "Monitor, audit and steer the OpenAI Batch pipeline. Errors are "
            '{"ok": false, "error": {"code", "message"}}. Every response carries'
            " `X-Request-Id`; request bodies are JSON, " + _LIMIT + ".",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "headers": _HEADERS,
            "parameters": _PARAMETERS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


async def serve_document(request: web.Request) -> web.Response:
    """GET /api/admin/legacy/openapi.json."""
    return web.json_response(document())
