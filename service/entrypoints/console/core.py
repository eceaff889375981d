"""What every console module and page uses: the route shape, request accessors, errors."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from service.actors import token_actor
from service.adapters.sessions import Session
from service.adapters.tokens import Principal, Role
from service.application.ledger import Actor
from service.entrypoints.api.deps import DEPS, REQUEST_ID, ConsoleSettings, Deps
from service.entrypoints.api.watch import Watch
from service.entrypoints.console.settle import Projected

PREFIX = "/admin"
"""Where the console is mounted; every console URL starts with PREFIX + "/"."""

SESSION_COOKIE = "bl_session"
SIGNIN_CSRF_COOKIE = "bl_signin"
"""The sign-in form's double-submit CSRF cookie (there is no session yet to hold one)."""
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ConsoleRoute:
    """One console route; the guard checks it before the handler runs.

    `path` is relative to PREFIX ("/requests/{id}" answers /admin/requests/{id}).
    `role` is the minimum role; None means no session is needed (sign-in, assets).
    `background` routes are called by scripts, not people: without a session they answer
    401 instead of redirecting to sign-in, and they do not restart the idle clock.
    `name` names the route for `url(name, **parts)` in templates.
    """

    method: str
    path: str
    handler: Handler
    role: Role | None
    name: str | None = None
    background: bool = False


@dataclass(frozen=True)
class NavItem:
    """An entry of the header's navigation, shown to roles at or above `role`."""

    label: str
    path: str
    role: Role


NAV: tuple[NavItem, ...] = (
    NavItem("Overview", "/", Role.support),
    NavItem("Requests", "/requests", Role.support),
    NavItem("Batches", "/batches", Role.support),
    NavItem("Tokens", "/tokens", Role.superadmin),
    NavItem("Projections", "/projections", Role.superadmin),
)
"""The header's navigation; each entry's role is its page's (a test holds them equal)."""


class PageError(Exception):
    """Answer with the error page of `status`; `message` says what happened and what to do
    (the page's default for that status when empty). Raise it from any handler."""

    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None):
        super().__init__(message or str(status))
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class Asset:
    """A static file: served from memory, cached by browsers under its version."""

    body: bytes
    content_type: str
    version: str  # a hash of the body: the `?v=` of its URL


@dataclass
class Console:
    """The console's own state, under CONSOLE in its sub-application."""

    deps: Deps
    settings: ConsoleSettings
    watch: Watch  # live channels, keyed by session hash
    log: Any  # structlog's, bound to "console"
    projected: Projected  # the live channels' shared wait for the projections
    assets: dict[str, Asset] = field(default_factory=dict)


CONSOLE = web.AppKey("console", Console)
SESSION = web.RequestKey("console_session", Session)
"""The request's session, set by the guard on every route that has a role."""
SIGNIN_CSRF = web.RequestKey("console_signin_csrf", str)
"""The sign-in form's CSRF token, set by the sign-in page."""
CACHE_CONTROL = web.RequestKey("console_cache_control", str)
"""A Cache-Control other than `no-store` (static assets only)."""


def console(request: web.Request) -> Console:
    """The console's state."""
    return request.config_dict[CONSOLE]


def deps(request: web.Request) -> Deps:
    """The API's collaborators: `.store` (EventStore; `.store.pool` is the asyncpg pool),
    `.app` (the use cases), `.metrics`, `.default_model`, ..."""
    return request.config_dict[DEPS]


def session(request: web.Request) -> Session:
    """The signed-in session (routes with a role only)."""
    return request[SESSION]


def principal(request: web.Request) -> Principal:
    """Who is signed in: `.name`, `.role`, `.companies` (None: every company), `.sees(c)`."""
    return request[SESSION].principal


def companies(request: web.Request) -> frozenset[str] | None:
    """The companies the signed-in token may see (None: every company): pass it to every
    query and use case, as the API does."""
    return principal(request).companies


def actor(request: web.Request) -> Actor:
    """The actor of a write: the signed-in token's name, as over the API, with the
    request id as correlation id."""
    return Actor(token_actor(principal(request).name), correlation_id=request.get(REQUEST_ID))


def can(request: web.Request, role: Role) -> bool:
    """Whether the signed-in token has at least `role` (False when nobody is signed in)."""
    found = request.get(SESSION)
    return found is not None and found.principal.role >= role


ID_TEXT = re.compile(r"[A-Za-z0-9._:@\-]{1,200}")
"""What an id, a company or a model may be in a console URL or form (anything else is
refused before it reaches a query: a NUL byte is an error in PostgreSQL)."""


def valid_id(text: str) -> bool:
    """Whether `text` may be an id, a company or a model."""
    return ID_TEXT.fullmatch(text) is not None
