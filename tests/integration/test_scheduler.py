"""Schedulers: one instance at a time, and a failing run does not stop the loop."""

from __future__ import annotations

import asyncio

from service.entrypoints.scheduler import Scheduler
from service.logs import get_logger


async def test_a_failing_run_is_logged_and_the_next_tick_runs(db_dsn: str) -> None:
    calls = []

    async def job() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return 0

    stop = asyncio.Event()
    scheduler = Scheduler("test-job", job, 0.01, db_dsn, get_logger("test"))
    task = asyncio.create_task(scheduler.run(stop))
    async with asyncio.timeout(10):
        while len(calls) < 3:
            await asyncio.sleep(0.01)
    stop.set()
    await task
    assert scheduler.runs >= 2


async def test_two_instances_never_run_the_same_job_at_the_same_time(db_dsn: str) -> None:
    running, overlaps, total = 0, [], []

    async def job() -> int:
        nonlocal running
        running += 1
        overlaps.append(running)
        await asyncio.sleep(0.02)
        running -= 1
        total.append(1)
        return 1

    stop = asyncio.Event()
    log = get_logger("test")
    tasks = [
        asyncio.create_task(Scheduler("shared", job, 0, db_dsn, log).run(stop)) for _ in range(2)
    ]
    async with asyncio.timeout(10):
        while len(total) < 20:
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*tasks)
    assert max(overlaps) == 1
