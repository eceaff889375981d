"""A decider record: everything the application layer needs to know about one aggregate."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

S = TypeVar("S")
C = TypeVar("C")
E = TypeVar("E")

STREAM_SEPARATOR = "-"


def stream_name(category: str, entity_id: str) -> str:
    """The one way a stream is named: `<category>-<entity id>`."""
    return f"{category}{STREAM_SEPARATOR}{entity_id}"


def entity_of(stream: str) -> str:
    """The entity id a stream name carries (everything after the category)."""
    return stream.partition(STREAM_SEPARATOR)[2]


@dataclass(frozen=True)
class Decider(Generic[S, C, E]):
    """Stream naming, typed decoding, decide/decide_many, evolve, the initial state, and the
    scope (the company) an aggregate's events are stored under."""

    category: str
    decode: Callable[[bytes | str], E]
    decide: Callable[[S | None, C], list[E]]
    decide_many: Callable[[Sequence[S], C], list[list[E]]]
    evolve: Callable[[S | None, E], S]
    scope_of: Callable[[S], str]
    initial: S | None = None

    def stream_id(self, entity_id: str) -> str:
        """The stream of one entity."""
        return stream_name(self.category, entity_id)

    def fold(self, events: Iterable[E]) -> S | None:
        """The state its events describe (the initial state for none)."""
        state = self.initial
        for event in events:
            state = self.evolve(state, event)
        return state


def one_at_a_time(
    decide: Callable[[S | None, C], list[E]],
) -> Callable[[Sequence[S], C], list[list[E]]]:
    """A decide_many for an aggregate without a bulk path: decide for each in turn."""

    def many(states: Sequence[S], command: C) -> list[list[E]]:
        return [decide(state, command) for state in states]

    return many
