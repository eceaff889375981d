"""Serving the admin API: building its collaborators from the runtime, and the site lifecycle."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from aiohttp import web

from eventstore import EventStore
from service.application.app import Application
from service.config import Settings, StartupError
from service.entrypoints.api.app import create_app
from service.entrypoints.api.cursor import Cursors
from service.entrypoints.api.deps import ConsoleSettings, Deps
from service.entrypoints.api.edge import EdgeLimits, EdgeSite
from service.entrypoints.api.ratelimit import RateLimiter, parse_networks
from service.logs import get_logger
from service.metrics import Metrics


async def cursor_key(store: EventStore) -> bytes:
    """The cursor-signing key every instance shares, created on first use."""
    await store.pool.execute(
        "INSERT INTO api_settings (key, value) VALUES ('cursor_key', $1) ON CONFLICT DO NOTHING",
        secrets.token_hex(32),
    )
    value: str = await store.pool.fetchval(
        "SELECT value FROM api_settings WHERE key = 'cursor_key'"
    )
    return bytes.fromhex(value)


async def build_deps(
    store: EventStore, app: Application, metrics: Metrics, settings: Settings
) -> Deps:
    """The API's collaborators: the store it reads, the use cases it calls, the metrics."""
    return Deps(
        store=store,
        app=app,
        metrics=metrics,
        cursors=Cursors(await cursor_key(store)),
        token_limiter=RateLimiter(settings.api_rate_limit_per_minute),
        auth_failure_limiter=RateLimiter(settings.api_auth_failures_per_minute),
        trusted_proxies=parse_networks(settings.api_trusted_proxies),
        default_model=settings.openai_model,
        heartbeat_seconds=settings.sse_heartbeat_seconds,
        log=get_logger("api"),
        console=console_settings(settings),
    )


OPENAI_HOST = "api.openai.com"


def is_openais_own(base_url: str | None) -> bool:
    """Whether OPENAI_BASE_URL is OpenAI's API itself (unset, or https on api.openai.com)."""
    if base_url is None:
        return True
    parts = urlsplit(base_url.strip())
    host = (parts.hostname or "").lower()  # a host name compares in any case
    try:
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme.lower() == "https"
        and port in (None, 443)
        and (host == OPENAI_HOST or host.endswith("." + OPENAI_HOST))
    )


def console_settings(settings: Settings) -> ConsoleSettings | None:
    """The admin console's settings, or None when CONSOLE_ENABLED is false."""
    if not settings.console_enabled:
        return None
    return ConsoleSettings(
        idle=timedelta(minutes=settings.console_session_idle_minutes),
        max_age=timedelta(hours=settings.console_session_max_hours),
        secure_cookies=settings.console_secure_cookies,
        openai_dashboard=is_openais_own(settings.openai_base_url),
    )


def edge_limits(settings: Settings) -> EdgeLimits:
    """The connection-level limits of the listening site."""
    return EdgeLimits(
        header_timeout=settings.api_header_timeout_seconds,
        body_timeout=settings.api_body_timeout_seconds,
        idle_timeout=settings.api_idle_timeout_seconds,
        max_connections_per_address=settings.api_max_connections_per_address,
        exempt=tuple(parse_networks(settings.api_trusted_proxies)),
    )


async def start_api(
    store: EventStore, application: Application, metrics: Metrics, settings: Settings
) -> web.AppRunner:
    """Listen on HOST:PORT (a StartupError when it cannot); the runner to clean up."""
    app = create_app(await build_deps(store, application, metrics, settings))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = EdgeSite(runner, settings.host, settings.port, edge_limits(settings))
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(
            f"the admin API cannot listen on {settings.host}:{settings.port}:"
            f" {exc.strerror or exc} (set HOST / PORT, or run with --no-api)"
        ) from None
    get_logger("api").info("api.listening", host=settings.host, port=settings.port)
    if settings.console_enabled:
        get_logger("console").info(
            "console.listening", url=f"http://{settings.host}:{settings.port}/admin/"
        )
    return runner


async def serve_until(runner: web.AppRunner, stop: asyncio.Event) -> None:
    """Keep a started API until `stop` is set, then close it."""
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def run_api(
    store: EventStore,
    application: Application,
    metrics: Metrics,
    settings: Settings,
    stop: asyncio.Event,
) -> None:
    """Serve on HOST:PORT until `stop` is set."""
    await serve_until(await start_api(store, application, metrics, settings), stop)
