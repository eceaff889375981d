"""create_app: the admin API's composition, middlewares and routes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.adapters.tokens import verify
from service.entrypoints.api.deps import CLOSING, DEPS, PRINCIPAL, REQUEST_ID, Deps
from service.entrypoints.api.errors import ApiError, make_error_middleware
from service.entrypoints.api.ratelimit import client_address
from service.entrypoints.api.routes import ROUTES, route_for

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = 1024 * 1024


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id, echoed in X-Request-Id and recorded as correlation id."""
    incoming = request.headers.get("X-Request-Id", "")
    request[REQUEST_ID] = (
        incoming if 0 < len(incoming) <= 100 and incoming.isprintable() else secrets.token_hex(8)
    )
    response = await handler(request)
    if not response.prepared:
        response.headers["X-Request-Id"] = request[REQUEST_ID]
    return response


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer token, role, and rate limits; only public routes pass without a valid token."""
    info = request.match_info
    template = info.route.resource.canonical if info.route.resource is not None else request.path
    route = route_for(request.method, template)
    if route is None or route.role is None:
        return await handler(request)  # public, or unmatched (404/405 follow)
    d: Deps = request.app[DEPS]
    address = client_address(request, d.trusted_proxies)
    wait = d.auth_failure_limiter.blocked(address)
    if wait:
        raise ApiError(
            429, "rate_limited", "too many failed authentications", {"Retry-After": str(wait)}
        )
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    principal = (
        await verify(d.store.pool, token.strip()) if scheme.lower() == "bearer" and token else None
    )
    if principal is None:
        d.auth_failure_limiter.take(address)
        raise ApiError(
            401, "unauthorized", "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
        )
    if principal.role < route.role:
        raise ApiError(403, "forbidden", f"this route needs the {route.role.name} role")
    wait = d.token_limiter.take(principal.token_id)
    if wait:
        raise ApiError(
            429, "rate_limited", "too many requests for this token", {"Retry-After": str(wait)}
        )
    request[PRINCIPAL] = principal
    return await handler(request)


def create_app(deps: Deps) -> web.Application:
    """The admin API application on the given collaborators."""
    app = web.Application(
        middlewares=[request_ids, make_error_middleware(deps.log), authenticate],
        client_max_size=MAX_BODY_BYTES,
    )
    app[DEPS] = deps
    app[CLOSING] = asyncio.Event()
    app.on_shutdown.append(_end_streams)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    return app


async def _end_streams(app: web.Application) -> None:
    # Runs before aiohttp waits for open handlers: an event stream never ends by itself,
    # and held a SIGTERM-ed `serve` for two minutes. Clients resume by Last-Event-ID.
    app[CLOSING].set()
