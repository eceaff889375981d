"""Ends live streams whose credential dies: one query an interval for all of them.

`Watch` is the mechanism, keyed by any credential id and told which are still valid by
one query; `TokenWatch` is the API's (token ids; revoked or expired tokens), and the
admin console watches its sessions with the same class.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg
from aiohttp import web

from service.adapters.tokens import still_valid

CHECK_EVERY = 2.0
"""Seconds between checks: a revoked or expired token's streams end within about this."""

Validity = Callable[[asyncpg.Pool, Sequence[str]], Awaitable[set[str]]]
"""Which of the given keys are still valid (one query for all of them)."""


class Watch:
    """Hands each open stream an Event that is set when its key stops being valid."""

    def __init__(
        self, pool: asyncpg.Pool, interval: float = CHECK_EVERY, valid: Validity = still_valid
    ) -> None:
        self.pool = pool
        self.interval = interval
        self.valid = valid
        self._ends: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def open(self, key: str) -> asyncio.Event:
        """An Event set when `key` stops being valid, or when the server stops."""
        ended = asyncio.Event()
        self._ends[key].add(ended)
        return ended

    def close(self, key: str, ended: asyncio.Event) -> None:
        """Stop watching for a stream that ended."""
        ends = self._ends.get(key)
        if ends is not None:
            ends.discard(ended)
            if not ends:
                del self._ends[key]

    def end_all(self) -> None:
        """End every stream (the server is stopping)."""
        for ends in self._ends.values():
            for ended in ends:
                ended.set()

    async def check(self) -> None:
        """End the streams of every watched key that is no longer valid."""
        asked = list(self._ends)
        if not asked:
            return
        valid = await asyncio.wait_for(self.valid(self.pool, asked), self.interval)
        # Only the keys asked about: one whose first stream opened during the query is
        # checked next time, not ended for missing from the answer.
        for key in asked:
            if key not in valid:
                for ended in self._ends.get(key, ()):
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


class TokenWatch(Watch):
    """The API's watch: keys are token ids, ended when the token is revoked or expires."""

    def __init__(self, pool: asyncpg.Pool, interval: float = CHECK_EVERY) -> None:
        super().__init__(pool, interval, still_valid)


TOKEN_WATCH = web.AppKey("token_watch", TokenWatch)

W = TypeVar("W", bound=Watch)


def keep_watching(key: web.AppKey[W]) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that runs the watch under `key` while the app serves."""

    async def watching(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(app[key].run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return watching


watching = keep_watching(TOKEN_WATCH)
"""cleanup_ctx: run the app's token watch while it serves."""
