"""Data for the console's tests, made by the real application and pipeline: requests
queued, run through the emulator to completion or failure, projections kept up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from service.application.ledger import Actor
from statemachine.commands import QueueRequest
from tests.console.conftest import Console

TRANSCRIPT = "[01.10.2026 09:00:00] User: When is my next shift? Thanks!"


async def queue(
    console: Console,
    n: int,
    *,
    company: str = "acme",
    model: str = "gpt-4o-mini",
    prefix: str,
    project: bool = True,
) -> list[str]:
    """Queue n requests through the application, as the API's enqueue does; with
    `project`, the projections apply them before this returns."""
    commands = [
        QueueRequest(
            request_id=f"{prefix}{i}",
            company_id=company,
            session_id=f"s-{prefix}{i}",
            model=model,
            transcript=TRANSCRIPT,
        )
        for i in range(n)
    ]
    await console.runtime.app.queue(commands, Actor("token:test"))
    if project:
        await console.runtime.catch_up()
    return [c.request_id for c in commands]


async def settle(console: Console) -> None:
    """Run the creator and poller until every request has an outcome."""
    async with asyncio.timeout(30):
        await console.runtime.run_until_idle()
    await console.runtime.catch_up()


async def failed(
    console: Console, n: int, *, company: str = "acme", prefix: str, also: int = 0
) -> list[str]:
    """n requests that end PROCESSING_FAILED (every line fails, every attempt); `also`
    more of globex's (prefix "g" + prefix) fail with them."""
    await console.emulator.knobs(line_failure_rate=1.0)
    ids = await queue(console, n, company=company, prefix=prefix)
    if also:
        await queue(console, also, company="globex", prefix=f"g{prefix}")
    await settle(console)
    await console.emulator.knobs(line_failure_rate=0.0)
    return ids


async def catch_up_after(console: Console, seconds: float) -> None:
    """The projections apply the log `seconds` from now, as a runner a little behind."""
    await asyncio.sleep(seconds)
    await console.runtime.catch_up()


@contextlib.asynccontextmanager
async def projecting(console: Console) -> AsyncIterator[None]:
    """Keep the projections following the log meanwhile, as `serve`'s runners do."""

    async def follow() -> None:
        while True:
            await console.runtime.catch_up()
            await asyncio.sleep(0.05)

    task = asyncio.create_task(follow())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
