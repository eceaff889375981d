"""The event log port: what the application needs from an event store, whichever it is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from eventstore.model import NewEvent, RecordedEvent, StreamAppend


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


if TYPE_CHECKING:
    # Nothing subclasses EventLog, so this is where mypy proves both stores still fit it.
    from eventstore.memory import InMemoryEventStore
    from eventstore.store import EventStore

    def _both_stores_are_event_logs(pg: EventStore, memory: InMemoryEventStore) -> list[EventLog]:
        return [pg, memory]
