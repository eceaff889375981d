"""Application services: load an aggregate from its stream, decide, append at its version."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from eventstore import EventMetadata, EventStore, NewEvent, RecordedEvent, StreamAppend
from statemachine import batch as batch_agg
from statemachine import request as request_agg
from statemachine.batch import Batch, BatchCommand
from statemachine.events import BatchEvent, Event, RequestEvent, decode_event, encode_event, tag_of
from statemachine.request import Request, RequestCommand

Clock = Callable[[], datetime]
IdFactory = Callable[[], uuid.UUID]


class Actor:
    """Who issues commands (a token name, or a scheduler) and under which correlation id."""

    def __init__(self, name: str, correlation_id: str | None = None) -> None:
        self.name = name
        self.correlation_id = correlation_id


class Aggregates:
    """Loads, decides and appends requests and batches on one event store."""

    def __init__(self, store: EventStore, clock: Clock, new_id: IdFactory) -> None:
        self.store = store
        self.clock = clock
        self.new_id = new_id

    def to_new_events(self, events: Sequence[Event], actor: Actor) -> list[NewEvent]:
        """Store-ready events with ids and metadata."""
        meta = EventMetadata(
            occurred_at=self.clock(), actor=actor.name, correlation_id=actor.correlation_id
        )
        return [NewEvent(self.new_id(), tag_of(type(e)), encode_event(e), meta) for e in events]

    async def load_request(self, request_id: str) -> Request | None:
        """The request's current state from its stream."""
        recorded = await self.store.read_stream(request_agg.stream_id(request_id))
        return _fold_requests(recorded)

    async def load_requests(self, request_ids: Sequence[str]) -> dict[str, Request | None]:
        """Many requests in one read."""
        streams = await self.store.read_streams([request_agg.stream_id(r) for r in request_ids])
        return {rid: _fold_requests(streams[request_agg.stream_id(rid)]) for rid in request_ids}

    async def load_batch(self, batch_id: str) -> Batch | None:
        """The batch's current state from its stream."""
        recorded = await self.store.read_stream(batch_agg.stream_id(batch_id))
        events: list[BatchEvent] = [decode_event(e.data) for e in recorded]  # type: ignore[misc]
        return batch_agg.fold(events)

    async def handle_request(
        self, request_id: str, command: RequestCommand, actor: Actor
    ) -> Sequence[Event]:
        """Decide a command for one request and append its events at the version read."""
        state = await self.load_request(request_id)
        events = request_agg.decide(state, command)
        version = state.version if state else 0
        await self.store.append(
            request_agg.stream_id(request_id), version, self.to_new_events(events, actor)
        )
        return events

    async def handle_batch(
        self, batch_id: str, command: BatchCommand, actor: Actor
    ) -> Sequence[Event]:
        """Decide a command for one batch and append its events at the version read."""
        state = await self.load_batch(batch_id)
        events = batch_agg.decide(state, command)
        if events:
            version = state.version if state else 0
            await self.store.append(
                batch_agg.stream_id(batch_id), version, self.to_new_events(events, actor)
            )
        return events

    def request_appends(
        self, decided: Sequence[tuple[Request, Sequence[Event]]], actor: Actor
    ) -> list[StreamAppend]:
        """One expected-version append per request, ready for a single append_many."""
        return [
            StreamAppend(
                request_agg.stream_id(r.request_id), r.version, self.to_new_events(ev, actor)
            )
            for r, ev in decided
            if ev
        ]


def _fold_requests(recorded: Sequence[RecordedEvent]) -> Request | None:
    events: list[RequestEvent] = [decode_event(e.data) for e in recorded]  # type: ignore[misc]
    return request_agg.fold(events)
