"""Item isolation for the schedulers' passes: one batch that fails never stops the others."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from eventstore import WriterBusy

Clock = Callable[[], float]

# Failures of the service itself, not of one item: every other item would fail the same way,
# so the pass stops and the scheduler reconnects and retries on its next tick.
SERVICE_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    WriterBusy,
)


@dataclass
class Backoff:
    """Per-item exponential backoff: an item that failed waits before it is tried again."""

    base_seconds: float = 1.0
    max_seconds: float = 300.0
    clock: Clock = time.monotonic
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)

    def ready(self, key: str) -> bool:
        """Whether the item may be tried now."""
        entry = self._failures.get(key)
        return entry is None or self.clock() >= entry[1]

    def failed(self, key: str) -> float:
        """Record a failure; the seconds the item now waits."""
        self._forget_long_settled()
        count = self._failures.get(key, (0, 0.0))[0] + 1
        delay: float = min(self.max_seconds, self.base_seconds * 2.0 ** (count - 1))
        self._failures[key] = (count, self.clock() + delay)
        return delay

    def _forget_long_settled(self) -> None:
        # An item that ended elsewhere (another instance, a group with nothing left) never
        # succeeds here: forget it once its wait is long over, so the map stays bounded.
        horizon = self.clock() - self.max_seconds
        for key in [k for k, (_, until) in self._failures.items() if until < horizon]:
            del self._failures[key]

    def succeeded(self, key: str) -> None:
        """Forget an item's failures."""
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        """How many times in a row the item failed."""
        return self._failures.get(key, (0, 0.0))[0]


@dataclass
class Isolation:
    """Runs one item's work so that its failure is logged, counted and backed off alone."""

    backoff: Backoff
    log: Any
    on_failure: Callable[[str], None] = lambda _kind: None

    async def run(self, kind: str, key: str, work: Callable[[], Awaitable[int]], **ids: Any) -> int:
        """The work's result, or 0 when it failed or waits out its backoff."""
        if not self.backoff.ready(key):
            return 0
        try:
            done = await work()
        except SERVICE_FAILURES:
            raise
        except Exception as exc:
            delay = self.backoff.failed(key)
            self.on_failure(kind)
            self.log.error(
                f"{kind}.crashed",
                error=type(exc).__name__,
                reason=str(exc)[:300],
                failures=self.backoff.failures(key),
                retry_in_seconds=round(delay, 1),
                exc_info=True,
                **ids,
            )
            return 0
        self.backoff.succeeded(key)
        return done
