"""The console's one middleware: every request under /admin/ passes here.

In order: the route's table entry; for a POST, the Origin; for a route with a role, the
session (none: a redirect to sign-in, or 401 for scripts), the token's rate limit; for a
POST, the CSRF token (the session's, or on the sign-in form the double-submit cookie's);
the role. Then the handler; whatever it raises becomes an HTML error page here, before
the API's JSON error middleware (which wraps this one) could see it.
"""

from __future__ import annotations

import contextlib
import hmac
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web

from eventstore import ConcurrencyError, WriterBusy
from service.adapters.sessions import load_session
from service.application.errors import Missing, UseCaseError
from service.entrypoints.api.deps import PRINCIPAL, REQUEST_ID
from service.entrypoints.api.errors import _DATABASE_DOWN, ApiError
from service.entrypoints.api.ratelimit import client_address
from service.entrypoints.console.auth import clear_session_cookie, see_other, signin_location
from service.entrypoints.console.core import (
    CACHE_CONTROL,
    CSRF_FIELD,
    CSRF_HEADER,
    PREFIX,
    SESSION,
    SESSION_COOKIE,
    SIGNIN_CSRF_COOKIE,
    Console,
    ConsoleRoute,
    Handler,
    PageError,
    console,
)
from service.entrypoints.console.rendering import ERRORS, error_page
from service.entrypoints.console.routes import console_route
from statemachine.errors import InvalidTransition

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
CSRF_REFUSED = (
    "This form has expired or was not sent from the console; reload the page and try again."
)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
CONSOLE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


async def console_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare, after the API's (no-store, nosniff): the browser's rules."""
    response.headers.update(CONSOLE_HEADERS)
    cache = request.get(CACHE_CONTROL)
    if cache is not None:  # a versioned static asset: the API's no-store does not apply
        response.headers["Cache-Control"] = cache


def _route(request: web.Request) -> ConsoleRoute | None:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return None  # 404 or 405: the router's answer follows
    path = info.route.resource.canonical.removeprefix(PREFIX)
    return console_route(request.method, path)


def same_origin(request: web.Request) -> bool:
    """False when an Origin header names another site than the one asked (Host)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and _authority(parts.netloc, parts.scheme) == (
        _authority(request.host, parts.scheme)
    )


def _authority(netloc: str, scheme: str) -> str:
    default = {"http": ":80", "https": ":443"}.get(scheme, "")
    netloc = netloc.lower()
    return netloc.removesuffix(default) if default and netloc.endswith(default) else netloc


async def _csrf_sent(request: web.Request) -> str | None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in FORM_TYPES:
        value = (await request.post()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    return sent


def _matches(sent: str | None, expected: str) -> bool:
    return bool(sent and expected) and hmac.compare_digest((sent or "").encode(), expected.encode())


def _background(request: web.Request, route: ConsoleRoute) -> bool:
    """Called by a script: the live channel, a fragment, or a fetch() carrying its CSRF."""
    return route.background or "fragment" in request.query or CSRF_HEADER in request.headers


def _no_session(request: web.Request, route: ConsoleRoute, c: Console) -> web.StreamResponse:
    if _background(request, route):
        response: web.StreamResponse = error_page(request, 401)
    elif request.method in ("GET", "HEAD"):
        response = see_other(signin_location(request.rel_url.path_qs))
    else:
        response = see_other(signin_location())  # a form's post cannot be replayed after
    if SESSION_COOKIE in request.cookies:
        clear_session_cookie(response, c)
    return response


def _log_refusal(request: web.Request, c: Console, event: str, **fields: object) -> None:
    c.deps.auth_log.emit(
        event,
        client_address(request, c.deps.trusted_proxies),
        route=request.path,
        method=request.method,
        request_id=request.get(REQUEST_ID),
        **fields,
    )


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    c = console(request)
    route = _route(request)
    if route is None:
        # The router's 404 or 405 follows; a signed-in visitor still gets the header.
        with contextlib.suppress(asyncpg.PostgresError, *_DATABASE_DOWN):
            found = await load_session(
                c.deps.store.pool,
                request.cookies.get(SESSION_COOKIE, ""),
                idle=c.settings.idle,
                touch=False,
            )
            if found is not None:
                request[SESSION] = found
        return await handler(request)
    unsafe = request.method not in SAFE_METHODS
    if unsafe and not same_origin(request):
        _log_refusal(request, c, "console.cross_origin", origin=request.headers.get("Origin"))
        raise PageError(403, CSRF_REFUSED)
    expected = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
    if route.role is not None:
        found = await load_session(
            c.deps.store.pool,
            request.cookies.get(SESSION_COOKIE, ""),
            idle=c.settings.idle,
            touch=not _background(request, route) or unsafe,
        )
        if found is None:
            return _no_session(request, route, c)
        request[SESSION] = found
        request[PRINCIPAL] = found.principal  # the API's helpers (actor, companies) work too
        wait = c.deps.token_limiter.take(found.principal.token_id)
        if wait:
            raise PageError(
                429,
                f"Too many requests for this token. Wait {wait} seconds and try again.",
                {"Retry-After": str(wait)},
            )
        expected = found.csrf
    if unsafe and not _matches(await _csrf_sent(request), expected):
        _log_refusal(request, c, "console.csrf_refused")
        raise PageError(403, CSRF_REFUSED)
    if route.role is not None and request[SESSION].principal.role < route.role:
        who = request[SESSION].principal
        _log_refusal(request, c, "console.forbidden", token_name=who.name, role=who.role.name)
        raise PageError(
            403,
            f"This needs the {route.role.name} role; your token {who.name!r} has the"
            f" {who.role.name} role. Ask a superadmin for a token with the"
            f" {route.role.name} role.",
        )
    return await handler(request)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the request (see the module docstring); every failure is an HTML page."""
    c = console(request)
    try:
        return await _guarded(request, handler)
    except PageError as e:
        return error_page(request, e.status, e.message, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise  # a redirect
        allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None  # 405
        return error_page(request, e.status, headers=allow)
    except ApiError as e:  # an API helper reused by a page
        return error_page(request, e.status, e.message, e.headers)
    except Missing as e:
        what = str(e)
        return error_page(request, 404, f"There is {what}: check the link, or go back to the list.")
    except (UseCaseError, InvalidTransition, ConcurrencyError) as e:
        # Not cancellable any more, still changing, a transition no longer allowed, or a
        # concurrent write: what the page showed is out of date.
        return error_page(request, 409, f"{str(e).capitalize()}. {ERRORS[409].advice}")
    except WriterBusy:
        c.log.warning("console.writer_busy", path=request.path, method=request.method)
        return error_page(request, 503, headers={"Retry-After": "5"})
    except _DATABASE_DOWN as e:
        transport = request.transport
        if isinstance(e, ConnectionError) and (transport is None or transport.is_closing()):
            return error_page(request, 400, "The browser hung up.")  # nobody reads it
        c.log.warning("console.database_unavailable", path=request.path, error=type(e).__name__)
        return error_page(request, 503, headers={"Retry-After": "5"})
    except asyncpg.DataError:  # a value the database refuses, e.g. a NUL byte in a query
        return error_page(request, 400, "The address or the form holds a value that is not valid.")
    except Exception:
        c.log.exception("console.unhandled", path=request.path)
        return error_page(request, 500, log=c.log.error)
