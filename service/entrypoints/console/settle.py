"""Live changes wait for the projections: a page refreshed after a `change` must show it.

The live channel hears of an event as soon as it is in the log; the projections' runners
apply it a moment later. Before a page of events is announced, its channel waits (up to
SETTLE_WITHIN seconds, then announces anyway) until every projection's checkpoint has
reached the page's last position. One shared `Projected` per console reads the
checkpoints for all channels: one read per poll while anyone waits, never one per
client or per event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from eventstore import EventStore, RecordedEvent, Subscription
from projections.registry import all_projections

SETTLE_WITHIN = 2.0
"""Seconds a page of events waits for the projections before it is announced anyway
(a stopped or rebuilding projection must not stop the live channel)."""
POLL_SECONDS = 0.05
"""How often the checkpoints are read while a channel waits."""

Reader = Callable[[], Awaitable[int]]


def checkpoints_reader(pool: asyncpg.Pool, names: Sequence[str] | None = None) -> Reader:
    """Reads the lowest checkpoint of the projections `names` (default: all; a projection
    without a checkpoint yet counts as 0)."""
    wanted = sorted(names if names is not None else all_projections())

    async def read() -> int:
        row = await pool.fetchrow(
            "SELECT count(*), min(position) FROM projection_checkpoints WHERE name = ANY($1)",
            wanted,
        )
        return int(row[1]) if row[0] == len(wanted) else 0

    return read


class Projected:
    """Where every projection has got to, shared by the live channels of one console."""

    def __init__(self, read: Reader, *, poll: float = POLL_SECONDS) -> None:
        self.reached = 0
        self.reads = 0  # checkpoint reads so far (what sharing saves is counted in tests)
        self._read, self._poll = read, poll
        self._wanted = 0
        self._waiting = 0
        self._moved = asyncio.Event()  # replaced after each read: wakes the waiters
        self._task: asyncio.Task[None] | None = None

    async def reach(self, position: int, within: float = SETTLE_WITHIN) -> bool:
        """Wait until the projections have applied the log up to `position`; False when
        `within` seconds passed first."""
        if self.reached >= position:
            return True
        self._wanted = max(self._wanted, position)
        self._waiting += 1
        try:
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._follow())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    while self.reached < position:
                        await self._moved.wait()
        finally:
            self._waiting -= 1
        return self.reached >= position

    async def _follow(self) -> None:
        # Reads while someone waits for a position not reached yet, then stops: an idle
        # console reads nothing.
        while self._waiting and self._wanted > self.reached:
            try:
                self.reads += 1
                self.reached = max(self.reached, await self._read())
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass  # the database is away: waiters time out and announce anyway
            moved, self._moved = self._moved, asyncio.Event()
            moved.set()
            if self._waiting and self._wanted > self.reached:
                await asyncio.sleep(self._poll)

    async def close(self) -> None:
        """Stop reading (the console is shutting down)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class SettledSubscription(Subscription):
    """A subscription whose pages are handed out only once the projections have applied
    them (or SETTLE_WITHIN has passed)."""

    def __init__(
        self, store: EventStore, after: int, projected: Projected, *, scopes: list[str] | None
    ) -> None:
        super().__init__(
            store,
            after,
            types=None,
            categories=None,
            page_size=1000,
            poll_interval=1.0,
            scopes=scopes,
        )
        self._projected = projected
        self._pending: list[RecordedEvent] | None = None

    async def next_page(self) -> list[RecordedEvent]:
        """The next page, once projected. A page read but not yet handed out (the wait was
        cancelled by a heartbeat or the end of the stream) is kept for the next call:
        the position has already moved past it."""
        if self._pending is None:
            self._pending = await super().next_page()
        await self._projected.reach(self._pending[-1].position)
        page, self._pending = self._pending, None
        return page
