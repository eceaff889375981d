"""Readiness: the database answers through the store's pool, and every migration is applied.

`/readyz` is public and unlimited, so it must cost next to nothing: it never opens a
connection of its own (it borrows one from the pool, waiting at most TIMEOUT_SECONDS for
the whole check), one check runs at a time, and its answer is kept CACHE_SECONDS. A
burst of probes therefore costs at most one pooled check per interval.
"""

from __future__ import annotations

import asyncio
import functools

import asyncpg
from aiohttp import web

from eventstore import Migration, pending_migrations
from service.adapters.database import all_migrations
from service.entrypoints.api.schemas import Health
from service.relay_health import RelayHealth

CACHE_SECONDS = 1.0
TIMEOUT_SECONDS = 2.0


@functools.cache
def _migrations() -> list[Migration]:
    return all_migrations()  # read from the package once, not on every check


async def probe(pool: asyncpg.Pool) -> list[str]:
    """Names of the migrations not applied, asked on a pooled connection."""
    async with pool.acquire() as conn:
        return await pending_migrations(conn, _migrations())


class Readiness:
    """The cached answer of /readyz."""

    def __init__(
        self, cache_seconds: float = CACHE_SECONDS, timeout_seconds: float = TIMEOUT_SECONDS
    ) -> None:
        self.cache_seconds, self.timeout_seconds = cache_seconds, timeout_seconds
        self._lock = asyncio.Lock()
        self._answer: tuple[int, Health] | None = None
        self._until = 0.0

    def _fresh(self) -> tuple[int, Health] | None:
        now = asyncio.get_running_loop().time()
        return self._answer if self._answer is not None and now < self._until else None

    async def check(
        self, pool: asyncpg.Pool, relay: RelayHealth | None = None
    ) -> tuple[int, Health]:
        """Status and body: the cached answer, or one check shared by concurrent callers."""
        if (answer := self._fresh()) is not None:
            return answer
        async with self._lock:
            if (answer := self._fresh()) is not None:
                return answer  # another caller checked while this one waited
            answer = await self._ask(pool)
            if relay is not None:
                answer[1].checks["relay"] = relay_check(relay)
            self._answer = answer
            self._until = asyncio.get_running_loop().time() + self.cache_seconds
            return answer

    async def _ask(self, pool: asyncpg.Pool) -> tuple[int, Health]:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                missing = await probe(pool)
        except Exception as exc:  # any failure to reach the database means not ready
            return 503, Health(ok=False, checks={"database": f"unreachable: {type(exc).__name__}"})
        if missing:
            return 503, Health(ok=False, checks={"migrations": f"{len(missing)} pending"})
        return 200, Health(ok=True, checks={"database": "ok", "migrations": "ok"})


def relay_check(relay: RelayHealth) -> str:
    """The relay's line: reported, never a reason to refuse traffic."""
    # The API works without NATS, and the relay catches up from its checkpoint.
    if relay.role != "leader":
        return (
            f"{relay.role} (another instance relays to {relay.stream}, or none holds the lock yet)"
        )
    if relay.nats == "connected":
        return f"leader, connected to {relay.where}"
    return f"leader, NATS {relay.nats}: {relay.error or 'connecting'}"


READINESS = web.AppKey("readiness", Readiness)
