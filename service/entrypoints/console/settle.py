"""Live changes wait for the projections: a page refreshed after a `change` must show it."""

# The live channel hears of an event as soon as it is in the log; the projections'
# runners apply it a moment later. Before a page of events is announced, its channel
# waits (up to SETTLE_WITHIN seconds from when it read the page, then announces anyway)
# until every projection's checkpoint has reached the page's last position; a page
# announced before that is announced once more when they reach it. One shared
# `Projected` per console reads the checkpoints for all channels: one read per poll
# while anyone waits, never one per client or per event.

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from eventstore import EventStore, RecordedEvent, Subscription
from projections.registry import all_projections

# Seconds a page of events waits for the projections before it is announced anyway (a
# stopped or rebuilding projection must not stop the live channel).
SETTLE_WITHIN = 2.0
# How long a page announced before the projections applied it is still followed, to
# announce it once more when they do: a projection stopped for good is not polled forever.
LATE_WITHIN = 60.0
POLL_SECONDS = 0.05  # how often the checkpoints are read while a channel waits

Reader = Callable[[], Awaitable[int]]


def checkpoints_reader(pool: asyncpg.Pool, names: Sequence[str] | None = None) -> Reader:
    """The lowest checkpoint of projections `names` (default all; none recorded yet: 0)."""
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
        self._closed = False

    async def reach(self, position: int, within: float | None = SETTLE_WITHIN) -> bool:
        """Wait until the projections applied the log up to `position`; False if `within` passed."""
        if self.reached >= position or self._closed:
            return self.reached >= position  # closed: nobody reads any more, do not start
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
        """Stop reading, for good (the console is shutting down)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class SettledSubscription(Subscription):
    """A subscription whose pages are handed out once projected (or SETTLE_WITHIN passed)."""

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
        # A page read but not handed out yet (the wait was cancelled by a heartbeat or the
        # end of the stream; the position has already moved past it), and when its wait
        # ends whatever the heartbeats: a fresh allowance per call would never run out.
        self._pending: list[RecordedEvent] | None = None
        self._deadline = 0.0
        # The last event announced before the projections had applied it: announced
        # once more when they have, so the page's fragments refresh to show it.
        self._late: RecordedEvent | None = None
        self._reading: asyncio.Task[object] | None = None  # the task in next_page

    async def next_page_before(
        self, stop: asyncio.Event, within: float | None = None
    ) -> list[RecordedEvent] | None:
        """As Subscription's; a caller cancelled meanwhile leaves no read behind."""
        try:
            return await super().next_page_before(stop, within)
        finally:
            # Cancelled while it waited (the server stopping its streams), the caller
            # would leave next_page's task running, and its wait for a late event has
            # no end.
            reading = self._reading
            if reading is not None and reading is not asyncio.current_task():
                reading.cancel()

    async def next_page(self) -> list[RecordedEvent]:
        """The next page once projected; or the late event again once it is."""
        self._reading = asyncio.current_task()
        if self._pending is None and not await self._read_or_caught_up():
            late, self._late = self._late, None
            assert late is not None
            return [late]
        assert self._pending is not None
        loop = asyncio.get_running_loop()
        left = max(0.0, self._deadline - loop.time())
        settled = await self._projected.reach(self._pending[-1].position, within=left)
        page, self._pending = self._pending, None
        self._late = None if settled else page[-1]
        return page

    def _hold(self, page: list[RecordedEvent]) -> None:
        self._pending = page
        self._deadline = asyncio.get_running_loop().time() + SETTLE_WITHIN

    async def _read_or_caught_up(self) -> bool:
        """Hold the next page (True), or return False once the projections reach the late event."""
        if self._late is None:
            self._hold(await super().next_page())
            return True
        reading = asyncio.ensure_future(super().next_page())
        catching = asyncio.ensure_future(
            self._projected.reach(self._late.position, within=LATE_WITHIN)
        )
        try:
            await asyncio.wait({reading, catching}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                if catching.result():
                    return False
                self._late = None  # LATE_WITHIN passed, or the waiter closed: just read on
            self._hold(await reading)
            return True
        finally:
            catching.cancel()
            if not reading.done():
                reading.cancel()
            elif self._pending is None and not reading.cancelled() and not reading.exception():
                # Cancelled just as a page came: the position has moved past it, keep it.
                self._hold(reading.result())
