"""The unit of work: load aggregates, decide, commit every stream at once, retry on a conflict.

This module and the use cases beside it are the only code that appends events.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

import msgspec

from eventstore import ConcurrencyError, EventLog, EventMetadata, NewEvent, StreamAppend
from service.application.errors import StillChanging
from statemachine.decider import Decider
from statemachine.events import Event, encode_event, tag_of

Clock = Callable[[], datetime]
IdFactory = Callable[[], uuid.UUID]
T = TypeVar("T")


class Versioned(Protocol):
    """An aggregate state that knows the stream version it was folded to."""

    @property
    def version(self) -> int:
        """The version of its stream."""


S = TypeVar("S", bound=Versioned)
C = TypeVar("C")
E = TypeVar("E", bound=Event)


class Actor(msgspec.Struct, frozen=True):
    """Who issues commands (a token's name, or a scheduler) and under which correlation id."""

    name: str
    correlation_id: str | None = None


class Unit:
    """One unit of work: the events decided for every stream it touches, committed once."""

    def __init__(self, ledger: Ledger, actor: Actor) -> None:
        self.ledger = ledger
        self.actor = actor
        self._appends: dict[str, StreamAppend] = {}

    def decide(
        self, decider: Decider[S, C, E], entity_id: str, state: S | None, command: C
    ) -> list[E]:
        """Decide a command and stage its events at the version `state` was read at."""
        events = decider.decide(state, command)
        if events:
            # A new stream's scope comes from the event that creates it.
            scope = decider.scope_of(state if state else decider.evolve(None, events[0]))
            self.stage(decider.stream_id(entity_id), state.version if state else 0, events, scope)
        return events

    def decide_many(
        self,
        decider: Decider[S, C, E],
        states: dict[str, S],
        command: C,
    ) -> dict[str, list[E]]:
        """Decide one command for many entities (by id) through the decider's bulk path."""
        decided = decider.decide_many(list(states.values()), command)
        out = dict(zip(states, decided, strict=True))
        for entity_id, events in out.items():
            state = states[entity_id]
            stream = decider.stream_id(entity_id)
            self.stage(stream, state.version, events, decider.scope_of(state))
        return out

    def stage(
        self, stream_id: str, expected_version: int, events: Sequence[Event], scope: str
    ) -> None:
        """Stage decided events for one stream (nothing is staged for no events)."""
        if not events:
            return
        if stream_id in self._appends:
            raise ValueError(f"{stream_id} is decided twice in one unit of work")
        new = self.ledger.to_new_events(events, self.actor)
        self._appends[stream_id] = StreamAppend(stream_id, expected_version, new, scope)

    async def commit(self) -> None:
        """Append every staged stream in one transaction, at the versions read."""
        if self._appends:
            await self.ledger.store.append_many(list(self._appends.values()))
            self._appends.clear()


class Ledger:
    """Reads aggregates from their streams and commits units of work on one event store."""

    def __init__(
        self, store: EventLog, clock: Clock, new_id: IdFactory, *, attempts: int = 5
    ) -> None:
        self.store = store
        self.clock = clock
        self.new_id = new_id
        self.attempts = attempts

    def to_new_events(self, events: Sequence[Event], actor: Actor) -> list[NewEvent]:
        """Store-ready events with ids and metadata."""
        meta = EventMetadata(
            occurred_at=self.clock(), actor=actor.name, correlation_id=actor.correlation_id
        )
        return [NewEvent(self.new_id(), tag_of(type(e)), encode_event(e), meta) for e in events]

    async def load(self, decider: Decider[S, C, E], entity_id: str) -> S | None:
        """One aggregate's current state from its stream."""
        recorded = await self.store.read_stream(decider.stream_id(entity_id))
        return decider.fold(decider.decode(e.data) for e in recorded)

    async def read_many(
        self, decider: Decider[S, C, E], entity_ids: Sequence[str]
    ) -> dict[str, list[E]]:
        """Many aggregates' events, decoded, in one read, by id."""
        streams = await self.store.read_streams([decider.stream_id(i) for i in entity_ids])
        return {
            i: [decider.decode(e.data) for e in streams[decider.stream_id(i)]] for i in entity_ids
        }

    async def load_many(
        self, decider: Decider[S, C, E], entity_ids: Sequence[str]
    ) -> dict[str, S | None]:
        """Many aggregates in one read, by id."""
        events = await self.read_many(decider, entity_ids)
        return {i: decider.fold(events[i]) for i in entity_ids}

    async def run(
        self, actor: Actor, work: Callable[[Unit], Awaitable[T]], *, attempts: int | None = None
    ) -> T:
        """Run `work` in a unit of work and commit it; on a conflict, read and decide again.

        `work` must only read and decide: it runs again after a conflict. A use case that
        records something done outside (an upload, a created batch) passes attempts=1.
        """
        attempts = attempts or self.attempts
        for _ in range(attempts):
            unit = Unit(self, actor)
            result = await work(unit)
            try:
                await unit.commit()
            except ConcurrencyError:
                continue
            return result
        raise StillChanging(attempts)

    async def execute(
        self,
        decider: Decider[S, C, E],
        entity_id: str,
        command: C,
        actor: Actor,
        *,
        attempts: int | None = None,
    ) -> list[E]:
        """Load one aggregate, decide one command, commit (retrying on a conflict)."""

        async def work(unit: Unit) -> list[E]:
            state = await self.load(decider, entity_id)
            return unit.decide(decider, entity_id, state, command)

        return await self.run(actor, work, attempts=attempts)
