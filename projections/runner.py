"""Runs a projection: follow the log from its checkpoint, apply chunks exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import structlog

from eventstore import EventStore, RecordedEvent, category_of
from projections.base import Decoded, Projection, Tables, chunk_key, leader_key, live_tables
from statemachine.events import decode_event

Hook = Callable[[asyncpg.Connection], Awaitable[None]]


def decode(events: Sequence[RecordedEvent]) -> list[Decoded]:
    """Pair each recorded event with its domain event."""
    return [(e, decode_event(e.data)) for e in events]


def relevant(
    projection: Projection, events: Sequence[RecordedEvent], after: int = 0
) -> list[RecordedEvent]:
    """The events after `after` from the streams of the projection's categories."""
    cats = projection.categories
    return [e for e in events if e.position > after and category_of(e.stream_id) in cats]


async def checkpoint(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> int:
    """A projection's checkpoint (0 before its first chunk)."""
    value = await conn.fetchval("SELECT position FROM projection_checkpoints WHERE name = $1", name)
    return int(value or 0)


async def apply_chunk(
    conn: asyncpg.Connection,
    projection: Projection,
    tables: Tables,
    events: Sequence[RecordedEvent],
    *,
    checkpoint_name: str | None = None,
    before_commit: Hook | None = None,
) -> int:
    """Apply the events after the checkpoint and move it, in one transaction; returns it."""
    name = checkpoint_name or projection.name
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", chunk_key(projection.name))
        await conn.execute(
            "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING", name
        )
        done = int(
            await conn.fetchval(
                "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE", name
            )
        )
        fresh = relevant(projection, events, done)
        if fresh:
            await projection.apply(conn, tables, decode(fresh))
        last = max(done, events[-1].position if events else done)
        await conn.execute(
            "UPDATE projection_checkpoints SET position = $2, updated_at = now() WHERE name = $1",
            name,
            last,
        )
        if before_commit is not None:
            await before_commit(conn)
    return last


class ProjectionRunner:
    """One projection's runner; only the instance holding its leader lock applies events."""

    def __init__(
        self,
        store: EventStore,
        projection: Projection,
        *,
        page_size: int = 5000,
        poll_interval: float = 0.5,
    ) -> None:
        self.store = store
        self.projection = projection
        self.page_size = page_size
        self.poll_interval = poll_interval
        self.before_commit: Hook | None = None  # test fault point between apply and commit
        self.position = 0
        # structlog, configured once by the entry point: runner failures land in the JSON logs.
        self.log = structlog.get_logger(component="projections", projection=projection.name)

    async def catch_up(self) -> int:
        """Apply everything up to the head as it is now; returns the checkpoint."""
        tables = live_tables(self.projection)
        async with self.store.pool.acquire() as conn:
            position = await checkpoint(conn, self.projection.name)
            while page := await self.store.read_all(position, self.page_size):
                position = await apply_chunk(
                    conn, self.projection, tables, page, before_commit=self.before_commit
                )
                self.position = position
        return position

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Hold the leader lock (waiting for it), then follow the log until `stop` is set."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            leader: asyncpg.Connection | None = None
            try:
                leader = await asyncpg.connect(self.store.dsn)
                key = leader_key(self.projection.name)
                if await leader.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    await self._follow(stop)
            except Exception:  # a lost connection or a failing chunk: log, wait, start over
                self.log.exception("projection.runner_failed", retry_in=self.poll_interval)
            finally:
                if leader is not None:
                    with contextlib.suppress(Exception):
                        await leader.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)

    async def _follow(self, stop: asyncio.Event) -> None:
        tables = live_tables(self.projection)
        async with self.store.pool.acquire() as conn:
            start = await checkpoint(conn, self.projection.name)
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1)", chunk_key(self.projection.name)
                )
                await self.projection.resume(conn, tables)
        # Unfiltered, so the checkpoint reaches the head and lag reads 0 when idle; other
        # categories are skipped before decoding.
        sub = self.store.subscribe(
            start, page_size=self.page_size, poll_interval=self.poll_interval
        )
        async with sub:
            while (page := await sub.next_page_before(stop)) is not None:
                async with self.store.pool.acquire() as conn:
                    self.position = await apply_chunk(
                        conn,
                        self.projection,
                        tables,
                        page,
                        before_commit=self.before_commit,
                    )
