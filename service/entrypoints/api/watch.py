"""Ends event streams whose token is revoked or expires: one query an interval for all of them."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from service.adapters.tokens import still_valid

CHECK_EVERY = 2.0
"""Seconds between checks: a revoked or expired token's streams end within about this."""


class TokenWatch:
    """Hands each open stream an Event that is set when its token stops being valid."""

    def __init__(self, pool: asyncpg.Pool, interval: float = CHECK_EVERY) -> None:
        self.pool = pool
        self.interval = interval
        self._ends: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def open(self, token_id: str) -> asyncio.Event:
        """An Event set when `token_id` is revoked or expires, or when the server stops."""
        ended = asyncio.Event()
        self._ends[token_id].add(ended)
        return ended

    def close(self, token_id: str, ended: asyncio.Event) -> None:
        """Stop watching for a stream that ended."""
        ends = self._ends.get(token_id)
        if ends is not None:
            ends.discard(ended)
            if not ends:
                del self._ends[token_id]

    def end_all(self) -> None:
        """End every stream (the server is stopping)."""
        for ends in self._ends.values():
            for ended in ends:
                ended.set()

    async def check(self) -> None:
        """End the streams of every watched token that is no longer valid."""
        asked = list(self._ends)
        if not asked:
            return
        valid = await asyncio.wait_for(still_valid(self.pool, asked), self.interval)
        # Only the tokens asked about: one whose first stream opened during the query is
        # checked next time, not ended for missing from the answer.
        for token_id in asked:
            if token_id not in valid:
                for ended in self._ends.get(token_id, ()):
                    ended.set()

    async def run(self) -> None:
        """Check every interval until cancelled; a database hiccup only delays a check."""
        while True:
            await asyncio.sleep(self.interval)
            # A database hiccup or a saturated pool delays a check; the next one catches up.
            with contextlib.suppress(
                OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError
            ):
                await self.check()


TOKEN_WATCH = web.AppKey("token_watch", TokenWatch)


async def watching(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run the app's watch while it serves."""
    task = asyncio.get_running_loop().create_task(app[TOKEN_WATCH].run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
