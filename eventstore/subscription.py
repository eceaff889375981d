"""Catch-up-then-live subscription to the global log, woken by NOTIFY, kept alive by polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import asyncpg

from eventstore.model import RecordedEvent
from eventstore.store import NOTIFY_CHANNEL

if TYPE_CHECKING:
    from eventstore.store import EventStore

_RECONNECT_BACKOFF_MAX = 5.0


class Subscription:
    """Yields every event after a position, in position order, for as long as it is iterated.

    Reading is done by position through the pool; NOTIFY only shortens the wait. When the
    LISTEN connection is lost the subscription keeps polling every `poll_interval` and
    reconnects in the background, so a dead listener slows delivery but never stops it.
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
    ) -> None:
        self._store = store
        self.position = after
        self._types = types
        self._categories = categories
        self._page_size = page_size
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._next_connect_at = 0.0
        self._backoff = 0.1
        self.reconnects = 0

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
        while True:
            await self._ensure_listener()
            # Clear before reading: a NOTIFY that lands during the read still wakes the wait.
            self._wake.clear()
            filtered = bool(self._types or self._categories)
            head = await self._store.head() if filtered else 0
            page = await self._store.read_all(
                self.position, self._page_size, types=self._types, categories=self._categories
            )
            if page:
                self.position = page[-1].position
                return page
            # Positions commit in order, so nothing at or below a head read before the
            # query can still appear: skip past it instead of rescanning it next time.
            self.position = max(self.position, head)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)

    @property
    def listening(self) -> bool:
        """Whether a live LISTEN connection is open."""
        return self._listener is not None and not self._listener.is_closed()

    async def _ensure_listener(self) -> None:
        if self.listening:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_connect_at:
            return
        try:
            conn = await asyncpg.connect(self._store.dsn, timeout=5)
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            conn.add_termination_listener(self._on_terminated)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            self._next_connect_at = loop.time() + self._backoff
            self._backoff = min(self._backoff * 2, _RECONNECT_BACKOFF_MAX)
            return
        if self._listener is not None:
            self.reconnects += 1
        self._listener = conn
        self._backoff = 0.1

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    def _on_terminated(self, *_: object) -> None:
        self._wake.set()  # re-check at once: events may have landed while it died

    async def close(self) -> None:
        """Close the LISTEN connection."""
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        self._listener = None
