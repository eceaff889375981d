"""Typed errors raised by the event store."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


class EventStoreError(Exception):
    """Base class of every event store error."""


@dataclass(frozen=True)
class StreamConflict:
    """One stream whose version differed from the one the writer expected."""

    stream_id: str
    expected: int
    actual: int


class ConcurrencyError(EventStoreError):
    """A stream moved since the writer read it; nothing of the append was written."""

    def __init__(self, conflicts: list[StreamConflict]) -> None:
        self.conflicts = conflicts
        shown = ", ".join(
            f"{c.stream_id} expected v{c.expected} is v{c.actual}" for c in conflicts[:5]
        )
        more = f" (+{len(conflicts) - 5} more)" if len(conflicts) > 5 else ""
        super().__init__(f"version conflict on {len(conflicts)} stream(s): {shown}{more}")


class DuplicateEventError(EventStoreError):
    """An event id in the append is already stored; nothing of the append was written."""

    def __init__(self, event_ids: list[uuid.UUID]) -> None:
        self.event_ids = event_ids
        super().__init__(f"event id(s) already stored: {', '.join(map(str, event_ids[:5]))}")


class WriterBusy(EventStoreError):
    """The writer lock was not free within the store's timeout; nothing was written: retry."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(
            f"the writer lock was not free within {timeout:g} s (another transaction holds it);"
            " nothing of the append was written and it can be retried"
        )
