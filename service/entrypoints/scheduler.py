"""Runs a job every interval in exactly one instance at a time (a PostgreSQL advisory lock)."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from eventstore import WriterBusy

IDLE_PAUSE = 0.05  # with a zero interval, the pause between runs that found nothing to do


def lock_key(name: str) -> int:
    """The advisory lock of a scheduler."""
    return (0x6273 << 32) | zlib.crc32(name.encode())


class Scheduler:
    """Calls `job` every `interval` seconds while holding the scheduler's lock for the run."""

    def __init__(
        self, name: str, job: Callable[[], Awaitable[int]], interval: float, dsn: str, log: Any
    ) -> None:
        self.name = name
        self.job = job
        self.interval = interval
        self.dsn = dsn
        self.log = log.bind(scheduler=name)
        self.runs = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until `stop` is set; a failing run is logged and retried on the next tick."""
        conn: asyncpg.Connection | None = None
        while not stop.is_set():
            did = 0
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.dsn)
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(self.name)):
                    try:
                        did = await self.job()
                        self.runs += 1
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock($1)", lock_key(self.name))
            except WriterBusy as exc:
                # Another transaction held the writer lock for the whole timeout: nothing
                # of that append was written; the next tick retries. Not a bug: no traceback.
                self.log.warning("scheduler.writer_busy", error=str(exc))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.log.warning("scheduler.database_error", error=str(exc)[:300])
                conn = None
            except Exception:
                self.log.exception("scheduler.run_failed")
            pause = self.interval if self.interval > 0 else (0 if did else IDLE_PAUSE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
