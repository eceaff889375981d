"""Value types of the event store: events to append, events as recorded, metadata."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


# Events and their metadata hold only scalars, so they can never be part of a
# reference cycle: untracked (gc=False), reading a page of 50,000 does not make CPython's
# collector walk them again and again (it cost a third of decoding a page).
class EventMetadata(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Who caused an event, in answer to what, and when it happened."""

    occurred_at: datetime
    actor: str = "system"
    correlation_id: str | None = None
    causation_id: str | None = None


class NewEvent(msgspec.Struct, frozen=True, gc=False):
    """An event to append; data is already-encoded JSON so the store stays domain-free."""

    id: uuid.UUID
    type: str
    data: bytes
    metadata: EventMetadata


class StreamAppend(msgspec.Struct, frozen=True):
    """Events for one stream and the version the writer expects it to be at (None: any).

    `scope` is stored with each event: an opaque key readers can filter on through an
    index (the application uses the company a stream belongs to).
    """

    stream_id: str
    expected_version: int | None
    events: list[NewEvent]
    scope: str | None = None


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as stored: global position, stream version and its data as JSON text."""

    position: int
    stream_id: str
    version: int
    id: uuid.UUID
    type: str
    data: str
    metadata: EventMetadata
    recorded_at: datetime
    scope: str | None = None

    @property
    def category(self) -> str:
        """The stream's category, the part of its id before the first dash."""
        return category_of(self.stream_id)


def category_of(stream_id: str) -> str:
    """The category of a stream id (`request-42` -> `request`)."""
    return stream_id.split("-", 1)[0]
