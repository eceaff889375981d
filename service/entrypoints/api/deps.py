"""What handlers need, wired once by create_app and kept under one AppKey."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

from aiohttp import web

from eventstore import EventStore
from service.adapters.tokens import Principal
from service.application.app import Application
from service.entrypoints.api.cursor import Cursors
from service.entrypoints.api.ratelimit import RateLimiter
from service.metrics import Metrics


@dataclass
class Deps:
    """The API's collaborators."""

    store: EventStore
    app: Application
    metrics: Metrics
    cursors: Cursors
    token_limiter: RateLimiter
    auth_failure_limiter: RateLimiter
    trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    default_model: str
    heartbeat_seconds: float
    log: object


DEPS = web.AppKey("deps", Deps)
CLOSING = web.AppKey("closing", asyncio.Event)
"""Set when the server shuts down: open event streams end so the process can exit."""
REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
