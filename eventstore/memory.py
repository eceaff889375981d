"""The event log in memory: the same contract as the PostgreSQL store, for tests and tools."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import islice

from eventstore.errors import ConcurrencyError, DuplicateEventError, StreamConflict
from eventstore.model import NewEvent, RecordedEvent, StreamAppend
from eventstore.port import WriterLockStats


def _utc_now() -> datetime:
    return datetime.now(UTC)


class InMemoryEventStore:
    """An EventLog on Python lists; no method awaits, so each call is atomic on the loop."""

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self._clock = clock
        self._log: list[RecordedEvent] = []  # position p at index p - 1
        self._streams: dict[str, list[RecordedEvent]] = {}  # version v at index v - 1
        self._ids: set[uuid.UUID] = set()
        # Appends never interleave on one event loop: there is no lock to wait for.
        self.writer_lock = WriterLockStats()

    async def append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        *,
        scope: str | None = None,
    ) -> int:
        """Append events to one stream; returns the position of the last one."""
        return await self.append_many(
            [StreamAppend(stream_id, expected_version, list(events), scope)]
        )

    async def append_many(self, appends: Sequence[StreamAppend]) -> int:
        """Append to many streams: all or nothing; returns the last position."""
        # Every check runs before the first write, so a failed call leaves no trace.
        # Versions are those before the call, as under PostgreSQL's writer lock.
        current = {a.stream_id: self._version(a.stream_id) for a in appends}
        conflicts = [
            StreamConflict(a.stream_id, a.expected_version, current[a.stream_id])
            for a in appends
            if a.expected_version is not None and a.expected_version != current[a.stream_id]
        ]
        if conflicts:
            raise ConcurrencyError(conflicts)
        ids = [e.id for a in appends for e in a.events]
        stored = self._ids.intersection(ids)
        repeated = {i for i, n in Counter(ids).items() if n > 1}
        if stored or repeated:
            # The PostgreSQL store names the stored ids, or else those repeated in the call.
            raise DuplicateEventError(sorted(stored or repeated))
        recorded_at = self._clock()
        for a in appends:
            stream = self._streams.setdefault(a.stream_id, [])
            for e in a.events:
                event = RecordedEvent(
                    position=len(self._log) + 1,
                    stream_id=a.stream_id,
                    version=len(stream) + 1,
                    id=e.id,
                    type=e.type,
                    data=e.data.decode(),
                    metadata=e.metadata,
                    recorded_at=recorded_at,
                    scope=a.scope,
                )
                self._log.append(event)
                stream.append(event)
        self._ids.update(ids)
        return len(self._log)

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Events of one stream in version order, after `after_version`."""
        # Clamped: a negative after_version means "from the start", never a slice from the end.
        return self._streams.get(stream_id, [])[max(after_version, 0) :][:limit]

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """Every event of many streams, each stream in version order."""
        return {sid: list(self._streams.get(sid, [])) for sid in stream_ids}

    async def read_all(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        types: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        scopes: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """A page of the global log after position `after`, optionally filtered."""
        # An empty type or category filter filters nothing, as in the PostgreSQL store;
        # scopes, when given, are a limit: an empty list admits nothing.
        wanted_types = set(types or ())
        wanted_categories = set(categories or ())
        wanted_scopes = None if scopes is None else set(scopes)
        matching = (
            e
            for e in self._after(after)
            if (not wanted_types or e.type in wanted_types)
            and (not wanted_categories or e.category in wanted_categories)
            and (wanted_scopes is None or e.scope in wanted_scopes)
        )
        return list(islice(matching, limit))

    async def head(self, *, scopes: Sequence[str] | None = None) -> int:
        """The position of the last event (0 when the log is empty); with `scopes`, the last
        of those scopes."""
        if scopes is None:
            return len(self._log)
        wanted = set(scopes)
        return next((e.position for e in reversed(self._log) if e.scope in wanted), 0)

    async def stream_version(self, stream_id: str) -> int:
        """The version of a stream (0 when it has no events)."""
        return self._version(stream_id)

    async def stream_versions(self, stream_ids: Sequence[str]) -> dict[str, int]:
        """Versions of many streams."""
        return {sid: self._version(sid) for sid in stream_ids}

    def _version(self, stream_id: str) -> int:
        return len(self._streams.get(stream_id, ()))

    def _after(self, position: int) -> Iterator[RecordedEvent]:
        # By index, not by slice: one page must not copy everything after `position`.
        for index in range(max(position, 0), len(self._log)):
            yield self._log[index]
