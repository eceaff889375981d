"""create_app: the admin API's composition, middlewares and routes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.adapters.tokens import token_id_of, verify
from service.entrypoints.api.deps import CLOSING, DEPS, PRINCIPAL, REQUEST_ID, Deps
from service.entrypoints.api.edge import security_headers
from service.entrypoints.api.errors import ApiError, make_error_middleware
from service.entrypoints.api.ratelimit import client_address
from service.entrypoints.api.readiness import READINESS, Readiness
from service.entrypoints.api.routes import ROUTES, route_for
from service.entrypoints.api.watch import TOKEN_WATCH, TokenWatch, watching
from service.entrypoints.console.app import create_console, redirect_to_console
from service.entrypoints.console.core import PREFIX as CONSOLE_PREFIX

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
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    token = presented.strip() if scheme.lower() == "bearer" else ""
    token_id = token_id_of(token)  # the public part of a well-formed token; never the secret
    logged = {
        "token_id": token_id,
        "route": route.path,
        "method": request.method,
        "request_id": request.get(REQUEST_ID),
    }
    # Failed-auth throttling never refuses a valid token: whoever shares an address with
    # the admins, or knows a token id, must not lock them out. So only a credential that
    # cannot be valid is answered without asking the database: a missing or malformed one,
    # or one that failed before (d.refused: failures are final). Any other well-formed
    # token costs its one indexed lookup, as a valid one does; if it fails while its
    # address or its token id is over budget, the answer is 429 instead of 401.
    keys = [f"address:{address}"] + ([f"token:{token_id}"] if token_id else [])
    wait = max(d.auth_failure_limiter.blocked(key) for key in keys)
    principal = None
    if token_id is not None and token not in d.refused:
        principal = await verify(d.store.pool, token)
    if principal is None:
        if token_id is not None:
            d.refused.add(token)
        if wait:
            d.auth_log.emit("api.locked_out", address, retry_after=wait, **logged)
            raise ApiError(
                429, "rate_limited", "too many failed authentications", {"Retry-After": str(wait)}
            )
        for key in keys:
            d.auth_failure_limiter.take(key)
        reason = "missing" if not header else "malformed" if token_id is None else "invalid"
        d.auth_log.emit("api.auth_failed", address, reason=reason, **logged)
        raise ApiError(
            401, "unauthorized", "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
        )
    wait = d.token_limiter.take(principal.token_id)  # before the role check: 403s count too
    if wait:
        raise ApiError(
            429, "rate_limited", "too many requests for this token", {"Retry-After": str(wait)}
        )
    if principal.role < route.role:
        d.auth_log.emit(
            "api.forbidden", address, token_name=principal.name, role=principal.role.name, **logged
        )
        raise ApiError(403, "forbidden", f"this route needs the {route.role.name} role")
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
    app[TOKEN_WATCH] = TokenWatch(deps.store.pool, deps.token_check_seconds)
    app.cleanup_ctx.append(watching)
    app[READINESS] = Readiness()
    app.on_shutdown.append(_end_streams)
    app.on_response_prepare.append(security_headers)
    for n, route in enumerate(ROUTES):
        if route.method == "GET":  # HEAD wherever GET: the same answer without its body
            app.router.add_get(route.path, route.handler, allow_head=True)
        else:
            app.router.add_route(route.method, route.path, route.handler)
        if "{" not in route.path and all(r.path != route.path for r in ROUTES[n + 1 :]):
            # A fixed path answers every other method itself (405 with its Allow), before
            # a template registered later (`/requests/{id}`) can take `/requests/requeue`.
            app.router.add_route("*", route.path, _not_allowed(route.path))
    if deps.console is not None:
        # The admin console (DESIGN §10): HTML pages under /admin/, outside the JSON API
        # and its OpenAPI document; its own guard answers its errors as pages.
        app.router.add_get(CONSOLE_PREFIX, redirect_to_console)
        app.add_subapp(f"{CONSOLE_PREFIX}/", create_console(deps))
    return app


def _not_allowed(path: str) -> Handler:
    allowed = {r.method for r in ROUTES if r.path == path}
    allowed |= {"HEAD"} if "GET" in allowed else set()

    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))

    return handler


async def _end_streams(app: web.Application) -> None:
    # Runs before aiohttp waits for open handlers: an event stream never ends by itself,
    # and held a SIGTERM-ed `serve` for two minutes. Clients resume by Last-Event-ID.
    app[CLOSING].set()
    app[TOKEN_WATCH].end_all()
