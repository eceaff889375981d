"""What handlers need, wired once by create_app and kept under one AppKey."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from datetime import timedelta

from aiohttp import web

from eventstore import EventStore
from service.adapters.tokens import Principal
from service.application.app import Application
from service.entrypoints.api.cursor import Cursors
from service.entrypoints.api.ratelimit import AuthLog, RateLimiter, RefusedCredentials
from service.metrics import Metrics


@dataclass(frozen=True)
class ConsoleSettings:
    """The admin console's sessions (CONSOLE_* settings); the console is served at /admin/
    when Deps.console holds these."""

    idle: timedelta = timedelta(minutes=30)  # a session unused this long ends
    max_age: timedelta = timedelta(hours=12)  # and any session ends this long after sign-in
    secure_cookies: bool = False  # cookies marked Secure: only sent over HTTPS
    # Link OpenAI batch ids to platform.openai.com: only when the batches are OpenAI's (not
    # the emulator's or another endpoint's, where the dashboard would not know them);
    # console_settings decides from OPENAI_BASE_URL.
    openai_dashboard: bool = False


@dataclass
class Deps:
    """The API's collaborators."""

    store: EventStore
    app: Application
    metrics: Metrics
    cursors: Cursors
    token_limiter: RateLimiter
    auth_failure_limiter: RateLimiter  # failed authentications per address and per token id
    trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    default_model: str
    heartbeat_seconds: float
    log: object
    token_check_seconds: float = 2.0  # how soon a revoked or expired token's streams end
    refused: RefusedCredentials = field(default_factory=RefusedCredentials)
    auth_log: AuthLog = field(default_factory=AuthLog)  # 401s, 403s, lockouts; capped
    console: ConsoleSettings | None = None  # None: no admin console at /admin/


DEPS = web.AppKey("deps", Deps)
CLOSING = web.AppKey("closing", asyncio.Event)
"""Set when the server shuts down: open event streams end so the process can exit."""
REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
