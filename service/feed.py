"""The one wire form of an event for integrators: what `/events`, the SSE stream and the
JetStream relay send, so a consumer decodes every feed the same way."""

from __future__ import annotations

from datetime import datetime

import msgspec

from eventstore import RecordedEvent


class EventItem(msgspec.Struct, rename="camel"):
    """An event of the global feed."""

    position: int
    stream_id: str
    version: int
    id: str
    type: str
    occurred_at: datetime
    actor: str
    correlation_id: str | None
    causation_id: str | None
    data: msgspec.Raw


def event_item(e: RecordedEvent) -> EventItem:
    """The feed's form of a recorded event (its data passed through as stored)."""
    m = e.metadata
    return EventItem(
        position=e.position,
        stream_id=e.stream_id,
        version=e.version,
        id=str(e.id),
        type=e.type,
        occurred_at=m.occurred_at,
        actor=m.actor,
        correlation_id=m.correlation_id,
        causation_id=m.causation_id,
        data=msgspec.Raw(e.data.encode()),
    )
