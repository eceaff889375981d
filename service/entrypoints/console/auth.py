"""Signing in and out: an API token is exchanged once for a server-side session.

The session cookie (`bl_session`) is HttpOnly, SameSite=Strict, Path=/admin/, Secure
with CONSOLE_SECURE_COOKIES, and lasts for the browser session; the server ends the
session sooner (idle, absolute expiry, token revoked or expired: see
service/adapters/sessions.py). Failed sign-ins are throttled and logged exactly as the
API's failed authentications are, from the same budget, and never with the secret.
"""

from __future__ import annotations

import contextlib
import re
import secrets

import asyncpg
from aiohttp import web
from yarl import URL

from service.adapters.sessions import create_session, delete_session, load_session, purge_expired
from service.adapters.tokens import Role, token_id_of
from service.entrypoints.api.deps import REQUEST_ID
from service.entrypoints.api.ratelimit import client_address
from service.entrypoints.console.core import (
    PREFIX,
    SESSION_COOKIE,
    SIGNIN_CSRF,
    SIGNIN_CSRF_COOKIE,
    Console,
    ConsoleRoute,
    PageError,
    console,
)
from service.entrypoints.console.rendering import render

HOME = f"{PREFIX}/"
SIGNIN = f"{PREFIX}/signin"
INVALID_TOKEN = "That token is not valid."  # noqa: S105 -- a message, not a secret
_SIGNIN_CSRF = re.compile(r"[A-Za-z0-9_\-]{43}")


def see_other(location: str) -> web.Response:
    """A 303 to `location` (returned, not raised: aiohttp deprecates returning raised ones)."""
    return web.Response(status=303, headers={"Location": location})


def safe_next(raw: object) -> str:
    """Where to go after sign-in: a console path of this site, else the overview."""
    if not isinstance(raw, str) or not raw.startswith(HOME) or len(raw) > 2000:
        return HOME
    if "\\" in raw or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        return HOME
    try:
        url = URL(raw)
    except ValueError:
        return HOME
    if url.is_absolute() or ".." in url.path.split("/") or url.path.startswith(SIGNIN):
        return HOME
    return raw


def signin_location(next_path: str | None = None) -> str:
    """The sign-in page, coming back to `next_path` afterwards."""
    if next_path is None or safe_next(next_path) == HOME:
        return SIGNIN
    return str(URL(SIGNIN).with_query(next=next_path))


def set_session_cookie(response: web.StreamResponse, c: Console, session_id: str) -> None:
    """The session cookie: never readable by scripts, never sent from another site."""
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        path=HOME,
        httponly=True,
        samesite="Strict",
        secure=c.settings.secure_cookies or None,
    )


def clear_session_cookie(response: web.StreamResponse, c: Console) -> None:
    """Tell the browser to forget its session cookie."""
    response.del_cookie(
        SESSION_COOKIE,
        path=HOME,
        httponly=True,
        samesite="Strict",
        secure=c.settings.secure_cookies or None,
    )


def signin_form(
    request: web.Request, *, next_path: str, notice: str = "", error: str = "", status: int = 200
) -> web.Response:
    """The sign-in page, with its double-submit CSRF cookie (kept if the browser has one)."""
    c = console(request)
    token = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
    if not _SIGNIN_CSRF.fullmatch(token):
        token = secrets.token_urlsafe(32)
    request[SIGNIN_CSRF] = token
    context = {"title": "Sign in", "next": next_path, "notice": notice, "error": error}
    response = render(request, "signin.html", context, status=status)
    response.set_cookie(
        SIGNIN_CSRF_COOKIE,
        token,
        path=HOME,
        httponly=True,
        samesite="Strict",
        secure=c.settings.secure_cookies or None,
    )
    return response


async def signin_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/signin: the form (or, already signed in, where `next` says)."""
    c = console(request)
    next_path = safe_next(request.query.get("next"))
    current = request.cookies.get(SESSION_COOKIE)
    if current and await load_session(
        c.deps.store.pool, current, idle=c.settings.idle, touch=False
    ):
        return see_other(next_path)
    notice = "Signed out." if "signed_out" in request.query else ""
    return signin_form(request, next_path=next_path, notice=notice)


async def signin(request: web.Request) -> web.StreamResponse:
    """POST /admin/signin: exchange a token for a session (the guard checked the CSRF)."""
    c = console(request)
    d = c.deps
    form = await request.post()
    raw = form.get("token", "")
    token = raw.strip() if isinstance(raw, str) else ""
    next_path = safe_next(form.get("next"))
    address = client_address(request, d.trusted_proxies)
    token_id = token_id_of(token)  # the public part of a well-formed token; never the secret
    logged = {
        "token_id": token_id,
        "route": SIGNIN,
        "method": request.method,
        "request_id": request.get(REQUEST_ID),
    }
    # As the API's authenticate: only a credential that cannot be valid is refused without
    # asking the database, and a valid token is never refused for its address's failures.
    keys = [f"address:{address}"] + ([f"token:{token_id}"] if token_id else [])
    wait = max(d.auth_failure_limiter.blocked(key) for key in keys)
    new = None
    if token_id is not None and token not in d.refused:
        new = await create_session(d.store.pool, token, max_age=c.settings.max_age)
    if new is None:
        if token_id is not None:
            d.refused.add(token)
        if wait:
            d.auth_log.emit("console.locked_out", address, retry_after=wait, **logged)
            raise PageError(
                429,
                f"Too many failed sign-ins. Wait {wait} seconds, then try again with a valid"
                " token.",
                {"Retry-After": str(wait)},
            )
        for key in keys:
            d.auth_failure_limiter.take(key)
        reason = "missing" if not token else "malformed" if token_id is None else "invalid"
        d.auth_log.emit("console.auth_failed", address, reason=reason, **logged)
        return signin_form(request, next_path=next_path, error=INVALID_TOKEN, status=401)
    pool = d.store.pool
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        await delete_session(pool, previous)  # a new id at every sign-in: no fixation
    # Housekeeping on the way: sign-ins are rare, and the table stays as small as its use.
    with contextlib.suppress(asyncpg.PostgresError):
        await purge_expired(pool, idle=c.settings.idle)
    who = new.session.principal
    c.log.info(
        "console.signed_in",
        token_name=who.name,
        role=who.role.name,
        address=address,
        request_id=request.get(REQUEST_ID),
    )
    response = see_other(next_path)
    set_session_cookie(response, c, new.session_id)
    response.del_cookie(SIGNIN_CSRF_COOKIE, path=HOME)
    return response


async def signout(request: web.Request) -> web.StreamResponse:
    """POST /admin/signout: end the session and forget its cookie."""
    c = console(request)
    await delete_session(c.deps.store.pool, request.cookies.get(SESSION_COOKIE, ""))
    c.log.info("console.signed_out", request_id=request.get(REQUEST_ID))
    response = see_other(f"{SIGNIN}?signed_out=1")
    clear_session_cookie(response, c)
    return response


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/signin", signin_page, None, name="signin"),
    ConsoleRoute("POST", "/signin", signin, None),
    ConsoleRoute("POST", "/signout", signout, Role.support, name="signout"),
)
