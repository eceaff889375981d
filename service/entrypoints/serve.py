"""`batchledger serve`: schedulers, projection runners and the admin API in one process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any

from service.adapters.database import migrate
from service.config import Settings
from service.entrypoints.runtime import Runtime
from service.logs import configure, get_logger


async def serve(
    settings: Settings, dsn: str, *, schedulers: bool, projections: bool, api: bool
) -> int:
    """Run until SIGINT or SIGTERM; migrations are applied first."""
    configure(settings.log_level, settings.log_format)
    log = get_logger("serve")
    await migrate(dsn)
    runtime = await Runtime.open(settings, dsn)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    jobs: list[Coroutine[Any, Any, None]] = []
    if projections:
        jobs += [runner.run(stop) for runner in runtime.runners]
    if schedulers:
        jobs += [s.run(stop) for s in runtime.schedulers()]
    if api:
        from service.entrypoints.api.server import run_api

        jobs.append(run_api(runtime.store, runtime.app, runtime.metrics, settings, stop))
    log.info("serve.started", schedulers=schedulers, projections=projections, api=api)
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        # A component that fails (the API cannot bind its port, say) stops the others:
        # the process exits instead of running on without it.
        if tasks:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await runtime.close()
        log.info("serve.stopped")
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return 0
