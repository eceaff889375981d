"""`batchledger serve`: schedulers, projection runners and the admin API in one process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from service.adapters.database import migrate
from service.adapters.openai_gateway import PermanentError, TransientError
from service.config import Settings, StartupError
from service.entrypoints.api.server import serve_until, start_api
from service.entrypoints.runtime import Runtime
from service.logs import configure, get_logger

OPENAI_CHECK_SECONDS = 10.0


async def serve(
    settings: Settings,
    dsn: str,
    *,
    schedulers: bool,
    projections: bool,
    api: bool,
    relay: bool = True,
) -> int:
    """Run until SIGINT or SIGTERM; migrations are applied first.

    Every component is started or checked before any scheduler works: a port that is
    taken or a key OpenAI refuses ends the process before a batch is planned or sent.
    """
    configure(settings.log_level, settings.log_format)
    log = get_logger("serve")
    await migrate(dsn)
    runtime = await Runtime.open(settings, dsn)
    relaying = runtime.relay if relay else None
    runtime.metrics.relay = None if relaying is None else relaying.health
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Future[None]] = []
    runner: web.AppRunner | None = None
    try:
        jobs: list[Coroutine[Any, Any, None]] = []
        if api:
            runner = await start_api(runtime.store, runtime.app, runtime.metrics, settings)
        running = runtime.schedulers() if schedulers else []
        if running:
            await check_openai(runtime, settings, log)
        if runner is not None:
            jobs.append(serve_until(runner, stop))
            runner = None  # serve_until closes it from now on
        if projections:
            jobs += [r.run(stop) for r in runtime.runners]
        jobs += [s.run(stop) for s in running]
        if relaying is not None:  # it waits for NATS on its own: serve starts without it
            jobs.append(relaying.run(stop))
        log_startup(log, settings, schedulers=schedulers, projections=projections, api=api)
        log_relay(log, settings, relay)
        tasks = [asyncio.ensure_future(job) for job in jobs]
        # A component that fails stops the others: the process exits instead of running
        # on without it.
        if tasks:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if runner is not None:  # started, then a check refused to go on
            await runner.cleanup()
        with contextlib.suppress(Exception):
            await runtime.close()
        log.info("serve.stopped")
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return 0


async def check_openai(runtime: Runtime, settings: Settings, log: Any) -> None:
    """Refuse to start on a key OpenAI refuses; an OpenAI that is down only warns (the
    schedulers retry every tick)."""
    where = settings.openai_base_url or "https://api.openai.com/v1"
    try:
        await runtime.gateway.check(OPENAI_CHECK_SECONDS)
    except PermanentError as exc:
        if exc.status in (401, 403):  # the settings are wrong, not OpenAI down for a while
            raise StartupError(
                f"OpenAI at {where} refuses OPENAI_API_KEY ({exc.code}): {exc.message[:200]}"
            ) from None
        log.warning("serve.openai_check_failed", openai=where, code=exc.code, reason=exc.message)
    except TransientError as exc:
        log.warning("serve.openai_unreachable", openai=where, reason=str(exc)[:300])
    else:
        log.info("serve.openai_reachable", openai=where)


def log_relay(log: Any, settings: Settings, relay: bool) -> None:
    """Say whether the JetStream relay runs, and why not when it does not."""
    if settings.nats_url is None:
        log.info("relay.disabled", reason="NATS_URL is not set")
    elif not relay:
        log.warning("relay.disabled", reason="--no-relay")
    else:
        log.info("relay.enabled", stream=settings.nats_stream, prefix=settings.nats_subject_prefix)


def log_startup(
    log: Any, settings: Settings, *, schedulers: bool, projections: bool, api: bool
) -> None:
    """One line per component that does not run and why; one line of what does."""
    enabled = {
        "batch-creator": ("BATCH_CREATION_ENABLED", settings.batch_creation_enabled),
        "batch-poller": ("BATCH_POLLING_ENABLED", settings.batch_polling_enabled),
    }
    running = []
    for name, (variable, on) in enabled.items():
        if not schedulers:
            log.warning("scheduler.disabled", scheduler=name, reason="--no-schedulers")
        elif not on:
            log.warning("scheduler.disabled", scheduler=name, reason=f"{variable}=false")
        else:
            running.append(name)
    if not projections:
        log.warning("projections.disabled", reason="--no-projections")
    log.info(
        "serve.started",
        schedulers=running,
        projections=projections,
        api=f"{settings.host}:{settings.port}" if api else None,
    )
