"""The event log port: what the application needs from an event store, whichever it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from eventstore.model import NewEvent, RecordedEvent, StreamAppend

# Upper bounds (seconds) of the writer lock wait histogram; the default timeout is 5 s.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class WriterLockStats:
    """How appends met the writer lock since the store opened: waits, their seconds, timeouts."""

    # A wait is an append that found the lock taken; one that then timed out counts as a
    # wait too (for the seconds it waited) and as a timeout.
    waits: int = 0
    wait_seconds: float = 0.0
    timeouts: int = 0
    # Cumulative, as Prometheus wants them: bucket i counts waits of at most WAIT_BUCKETS[i].
    bucket_counts: list[int] = field(default_factory=lambda: [0] * len(WAIT_BUCKETS))

    def record(self, seconds: float, *, timed_out: bool = False) -> None:
        """Count one append that had to wait `seconds` for the lock."""
        self.waits += 1
        self.wait_seconds += seconds
        if timed_out:
            self.timeouts += 1
        for i, bound in enumerate(WAIT_BUCKETS):
            if seconds <= bound:
                self.bucket_counts[i] += 1

    def buckets(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) pairs, ending with +Inf and every wait."""
        return [*zip(WAIT_BUCKETS, self.bucket_counts, strict=True), (float("inf"), self.waits)]


class EventLog(Protocol):
    """Append with optimistic concurrency and read by stream or by global position."""

    async def append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        *,
        scope: str | None = None,
    ) -> int:
        """Append events to one stream; returns the position of the last one."""
        ...

    async def append_many(self, appends: Sequence[StreamAppend]) -> int:
        """Append to many streams: all or nothing; returns the last position."""
        ...

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Events of one stream in version order, after `after_version`."""
        ...

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """Every event of many streams, each stream in version order."""
        ...

    async def read_all(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        types: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        scopes: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """A page of the global log after position `after`, optionally filtered (scopes, when
        given, limit it to events of those scopes)."""
        ...

    async def head(self, *, scopes: Sequence[str] | None = None) -> int:
        """The position of the last event (0 when the log is empty); with `scopes`, the last
        of those scopes."""
        ...

    async def stream_version(self, stream_id: str) -> int:
        """The version of a stream (0 when it has no events)."""
        ...

    async def stream_versions(self, stream_ids: Sequence[str]) -> dict[str, int]:
        """Versions of many streams."""
        ...

    @property
    def writer_lock(self) -> WriterLockStats:
        """How appends waited for the writer lock (a store without one never waits)."""
        ...


if TYPE_CHECKING:
    # Nothing subclasses EventLog, so this is where mypy proves both stores still fit it.
    from eventstore.memory import InMemoryEventStore
    from eventstore.store import EventStore

    def _both_stores_are_event_logs(pg: EventStore, memory: InMemoryEventStore) -> list[EventLog]:
        return [pg, memory]
