"""The route table: path, role, shapes and errors of every route, used to serve and to document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from service.adapters.tokens import Role
from service.entrypoints.api import handlers as h
from service.entrypoints.api import schemas as s
from service.entrypoints.api import token_handlers as th

BASE = "/api/admin/legacy"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUTH_ERRORS = (401, 403, 429)


async def _openapi(request: web.Request) -> web.StreamResponse:
    from service.entrypoints.api.openapi import serve_document

    return await serve_document(request)


@dataclass(frozen=True)
class Route:
    """One route; `role` None means public."""

    method: str
    path: str
    handler: Handler
    role: Role | None
    summary: str
    query: type | None = None
    body: type | None = None
    response: type | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"
    also: tuple[int, ...] = ()  # other success statuses with the same body


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        f"{BASE}/summary",
        h.summary,
        Role.support,
        "Count requests per status",
        s.SummaryQuery,
        None,
        s.SummaryResponse,
        errors=(400, 404),  # 404: a companyId outside the token's companies
    ),
    Route(
        "GET",
        f"{BASE}/requests",
        h.list_requests,
        Role.support,
        "List requests in one status (keyset paging)",
        s.RequestsQuery,
        None,
        s.RequestsResponse,
        errors=(400, 404),  # 404: a companyId outside the token's companies
    ),
    Route(
        "POST",
        f"{BASE}/requests/requeue",
        h.requeue,
        Role.admin,
        "Requeue failed requests",
        s.NoQuery,
        s.RequeueBody,
        s.RequeueResponse,
        errors=(400, 409, 413, 415),
    ),
    Route(
        "POST",
        f"{BASE}/requests",
        h.enqueue,
        Role.admin,
        "Enqueue one analysis request",
        s.NoQuery,
        s.EnqueueBody,
        s.EnqueueResponse,
        status=201,
        also=(200,),
        errors=(400, 409, 413, 415),
    ),
    Route(
        "GET",
        f"{BASE}/requests/{{id}}",
        h.get_request,
        Role.support,
        "One request with analysis, usage, cost",
        s.NoQuery,
        None,
        s.RequestResponse,
        errors=(400, 404),
    ),
    Route(
        "GET",
        f"{BASE}/requests/{{id}}/history",
        h.request_history,
        Role.support,
        "A request's events",
        s.NoQuery,
        None,
        s.HistoryResponse,
        errors=(400, 404),
    ),
    Route(
        "GET",
        f"{BASE}/batches",
        h.list_batches,
        Role.support,
        "List batches (keyset paging)",
        s.BatchesQuery,
        None,
        s.BatchesResponse,
        errors=(400,),
    ),
    Route(
        "GET",
        f"{BASE}/batches/{{id}}",
        h.get_batch,
        Role.support,
        "One batch",
        s.NoQuery,
        None,
        s.BatchResponse,
        errors=(400, 404),
    ),
    Route(
        "GET",
        f"{BASE}/batches/{{id}}/history",
        h.batch_history,
        Role.support,
        "A batch's events",
        s.NoQuery,
        None,
        s.HistoryResponse,
        errors=(400, 404),
    ),
    Route(
        "POST",
        f"{BASE}/batches/{{id}}/cancel",
        h.cancel_batch,
        Role.admin,
        "Cancel a batch at OpenAI",
        s.NoQuery,
        None,
        s.CancelResponse,
        status=202,
        errors=(400, 404, 409, 503),
    ),
    Route(
        "GET",
        f"{BASE}/events",
        h.events,
        Role.support,
        "The global event feed, paged by position",
        s.EventsQuery,
        None,
        s.EventsResponse,
        errors=(400,),
    ),
    Route(
        "GET",
        f"{BASE}/events/stream",
        h.events_stream,
        Role.support,
        "The event feed as Server-Sent Events",
        s.EventsQuery,
        None,
        None,
        errors=(400,),
        content_type="text/event-stream",
    ),
    Route(
        "GET",
        f"{BASE}/tokens",
        th.list_all,
        Role.superadmin,
        "List API tokens (never their secrets)",
        s.NoQuery,
        None,
        s.TokensResponse,
        errors=(400,),
    ),
    Route(
        "POST",
        f"{BASE}/tokens",
        th.create,
        Role.superadmin,
        "Create an API token, answered once",
        s.NoQuery,
        s.TokenBody,
        s.TokenCreatedResponse,
        status=201,
        errors=(400, 409, 413, 415),
    ),
    Route(
        "POST",
        f"{BASE}/tokens/{{id}}/revoke",
        th.revoke,
        Role.superadmin,
        "Revoke an API token by name",
        s.NoQuery,
        None,
        s.TokenRevokedResponse,
        errors=(400, 404),
    ),
    Route("GET", f"{BASE}/openapi.json", _openapi, Role.support, "This document", None, None, None),
    Route(
        "GET",
        "/metrics",
        h.metrics,
        Role.support,
        "Prometheus metrics",
        None,
        None,
        None,
        content_type="text/plain",
    ),
    Route("GET", "/healthz", h.healthz, None, "Liveness", None, None, s.Health),
    Route(
        "GET",
        "/readyz",
        h.readyz,
        None,
        "Readiness: database reachable, migrations applied",
        None,
        None,
        s.Health,
        also=(503,),  # not ready: the same body, its checks saying why
    ),
)


def route_for(method: str, path_template: str) -> Route | None:
    """The table entry of a matched route (HEAD is GET without the body: the same entry)."""
    method = "GET" if method == "HEAD" else method
    for route in ROUTES:
        if route.method == method and route.path == path_template:
            return route
    return None
