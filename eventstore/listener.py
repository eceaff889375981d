"""One LISTEN connection per store, shared by every subscription it wakes."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

NOTIFY_CHANNEL = "eventstore"
_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 5.0


class Listener:
    """Wakes subscriptions when events commit; reconnects with backoff when its connection dies.

    A connection per subscription made every SSE client hold a server connection of its
    own, so a few dozen integrators could exhaust `max_connections`. NOTIFY is only a
    wake-up (subscriptions read by position and also poll), so sharing one loses nothing.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._waiters: set[asyncio.Event] = set()
        self._conn: asyncpg.Connection | None = None
        self._connecting = False
        self._next_connect_at = 0.0
        self._backoff = _BACKOFF_MIN
        self._connected_before = False
        self._closed = False
        self.reconnects = 0

    def register(self) -> asyncio.Event:
        """A new event that is set on every NOTIFY and whenever the connection is lost."""
        wake = asyncio.Event()
        self._waiters.add(wake)
        return wake

    def unregister(self, wake: asyncio.Event) -> None:
        """Stop waking `wake`."""
        self._waiters.discard(wake)

    @property
    def listening(self) -> bool:
        """Whether a live LISTEN connection is open."""
        return self._conn is not None and not self._conn.is_closed()

    async def ensure(self) -> None:
        """Connect if not listening, unless a connect is under way or backing off."""
        loop = asyncio.get_running_loop()
        if self._closed or self.listening or self._connecting:
            return
        if loop.time() < self._next_connect_at:
            return
        self._connecting = True
        try:
            conn = await self._connect()
        except (OSError, asyncpg.PostgresError, TimeoutError):
            self._next_connect_at = loop.time() + self._backoff
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
            return
        finally:
            self._connecting = False
        if self._closed:  # the store closed while this connected: a subscription left
            with contextlib.suppress(Exception):  # running must not hold a connection
                await conn.close()
            return
        if self._connected_before:
            self.reconnects += 1
        self._connected_before = True
        self._conn = conn
        self._backoff = _BACKOFF_MIN

    async def _connect(self) -> asyncpg.Connection:
        """A connection listening on the channel."""
        conn = await asyncpg.connect(self._dsn, timeout=5)
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._wake_all)
        except BaseException:
            # Failed, or cancelled with the subscription that asked (an SSE client gone):
            # the connection must not outlive it, unclosed.
            conn.terminate()
            raise
        conn.add_termination_listener(self._wake_all)
        return conn

    def _wake_all(self, *_: object) -> None:
        # On termination too: events may have landed while the connection was dying.
        for wake in self._waiters:
            wake.set()

    async def close(self) -> None:
        """Close the connection for good; subscriptions still registered fall back to
        polling (a closed store's listener never connects again)."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close()
