"""The newest events of the log, read once per store and shared by its live subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import asyncpg

from eventstore.model import RecordedEvent

if TYPE_CHECKING:
    from eventstore.store import EventStore

_READ_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Tail:
    """A window of the latest events, kept current by one reader for the whole store.

    Without it, every live subscription (each SSE client, each projection runner) ran
    its own query on every NOTIFY: with appends flowing, N clients made N queries per
    commit. The window holds consecutive positions `base+1 .. base+len`; positions are
    gap-free and become visible in order, so a subscription whose position falls inside
    the window can take what follows it without asking the database, and one that fell
    behind it reads from the database as before.
    """

    def __init__(
        self, store: EventStore, *, capacity: int, max_bytes: int, page_size: int = 1000
    ) -> None:
        self._store = store
        self._capacity = capacity
        self._max_bytes = max_bytes  # event bodies vary (a queued request holds its transcript)
        self._page_size = page_size
        self._events: list[RecordedEvent] = []
        self._bytes = 0
        self._base: int | None = None
        self._grown = asyncio.Event()
        self._wake = store.listener.register()
        self._task: asyncio.Task[None] | None = None
        self.poll_interval = 1.0

    def start(self, poll_interval: float) -> None:
        """Run the reader if it is not running; poll at least every `poll_interval`."""
        self.poll_interval = min(self.poll_interval, poll_interval)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def after(self, position: int, limit: int) -> list[RecordedEvent] | None:
        """Up to `limit` events after `position`, or None when the window does not reach it."""
        if self._base is None or not self._base <= position <= self._base + len(self._events):
            return None
        start = position - self._base
        return self._events[start : start + limit]

    async def grown(self, within: float) -> None:
        """Wait until the window grows, or `within` seconds pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._grown.wait(), within)

    async def _run(self) -> None:
        while True:
            await self._store.listener.ensure()
            self._wake.clear()
            try:
                full = await self._read()
            except _READ_ERRORS:
                full = False  # subscriptions outside the window still read for themselves
            # A short page means the head was reached; a commit since then has set the wake.
            if not full:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _read(self) -> bool:
        """Read the next page into the window; whether it was full (more may be waiting)."""
        if self._base is None:
            self._base = await self._store.head()  # only what commits from now on
        page = await self._store.read_all(self._base + len(self._events), self._page_size)
        if not page:
            return False
        self._events.extend(page)
        self._bytes += sum(len(e.data) for e in page)
        self._trim()
        # Wake every waiter at once: each got the old event object, a new one replaces it.
        self._grown.set()
        self._grown = asyncio.Event()
        return len(page) == self._page_size

    def _trim(self) -> None:
        """Drop the oldest events until the window is within both of its limits."""
        assert self._base is not None
        drop = 0
        while drop < len(self._events) and (
            len(self._events) - drop > self._capacity or self._bytes > self._max_bytes
        ):
            self._bytes -= len(self._events[drop].data)
            drop += 1
        del self._events[:drop]
        self._base += drop

    async def close(self) -> None:
        """Stop the reader."""
        self._store.listener.unregister(self._wake)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
