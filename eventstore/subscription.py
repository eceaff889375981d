"""Catch-up-then-live subscription to the global log, woken by NOTIFY, kept alive by polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from eventstore.model import RecordedEvent, category_of

if TYPE_CHECKING:
    from eventstore.store import EventStore


class Subscription:
    """Yields every event after a position, in position order, for as long as it is iterated.

    Catching up, it reads pages by position through the pool; once it reaches the
    store's tail window it takes new events from there, read once for all live
    subscriptions. A NOTIFY on the store's shared listener only shortens the wait. When
    that connection is lost, reads fall back to polling every `poll_interval` while
    the listener reconnects, so a dead listener slows delivery but never stops it.
    """

    def __init__(
        self,
        store: EventStore,
        after: int,
        *,
        types: Sequence[str] | None,
        categories: Sequence[str] | None,
        page_size: int,
        poll_interval: float,
        scopes: Sequence[str] | None = None,
    ) -> None:
        self._store = store
        self.position = after
        self._types = types
        self._categories = categories
        self._scopes = None if scopes is None else frozenset(scopes)
        self._page_size = page_size
        self._poll_interval = poll_interval
        self._wake = store.listener.register()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[RecordedEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RecordedEvent]:
        while True:
            page = await self.next_page()
            for event in page:
                yield event

    async def next_page(self) -> list[RecordedEvent]:
        """The next non-empty page after the current position, waiting for one if needed."""
        tail = self._store.tail
        while True:
            tail.start(self._poll_interval)  # again each turn: a reader that died restarts
            window = tail.after(self.position, self._page_size)
            if window is None:
                page = await self._read()
            elif window:
                self.position = window[-1].position
                page = [e for e in window if self._wanted(e)]
            else:
                await tail.grown(self._poll_interval)
                continue
            if page:
                return page

    async def next_page_before(
        self, stop: asyncio.Event, within: float | None = None
    ) -> list[RecordedEvent] | None:
        """The next page, or None if `stop` is set or `within` seconds pass first.

        The position moves only when a page is returned, so nothing is lost by giving up.
        """
        reading = asyncio.ensure_future(self.next_page())
        stopping = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait(
            {reading, stopping}, timeout=within, return_when=asyncio.FIRST_COMPLETED
        )
        stopping.cancel()
        if reading in done:
            return reading.result()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        return None

    async def _read(self) -> list[RecordedEvent]:
        """A page from the database, for a subscription behind (or ahead of) the tail."""
        await self._store.listener.ensure()
        # Clear before reading: a NOTIFY that lands during the read still wakes the wait.
        self._wake.clear()
        filtered = bool(self._types or self._categories) or self._scopes is not None
        head = await self._store.head() if filtered else 0
        page = await self._store.read_all(
            self.position,
            self._page_size,
            types=self._types,
            categories=self._categories,
            scopes=None if self._scopes is None else sorted(self._scopes),
        )
        if page:
            self.position = page[-1].position
            return page
        # Positions commit in order, so nothing at or below a head read before the
        # query can still appear: skip past it instead of rescanning it next time.
        self.position = max(self.position, head)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._poll_interval)
        return []

    def _wanted(self, event: RecordedEvent) -> bool:
        if self._types and event.type not in self._types:
            return False
        if self._scopes is not None and event.scope not in self._scopes:
            return False
        return not self._categories or category_of(event.stream_id) in self._categories

    @property
    def listening(self) -> bool:
        """Whether the store's LISTEN connection is open."""
        return self._store.listener.listening

    @property
    def reconnects(self) -> int:
        """How many times the store's listener has reconnected."""
        return self._store.listener.reconnects

    async def close(self) -> None:
        """Stop being woken (the listener stays open for the store's other subscriptions)."""
        self._store.listener.unregister(self._wake)
