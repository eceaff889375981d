"""A machine declared once with `transitions`, and the lookup table derived from it.

The declaration (states, triggers, guards by name) is the single source of truth: the
`transitions.Machine` built from it draws the diagrams and drives the property tests,
and the table derived from that Machine decides every command, one or 50,000 at a time,
without a Machine or `add_model` per entity.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, Generic, TypeVar

from transitions import Machine

from statemachine.errors import InvalidTransition

S = TypeVar("S", bound=Enum)
E = TypeVar("E")
Guard = Callable[[Any, Any], bool]
Route = tuple[tuple[Any, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Declaration(Generic[S]):
    """States, initial state, transitions (trigger, source, dest, conditions) and guards."""

    entity: str
    states: type[S]
    initial: S
    transitions: Sequence[Mapping[str, Any]]
    guards: Mapping[str, Guard] = field(default_factory=dict)

    def machine(self, model: object | None = None, *, graph: bool = False) -> Machine:
        """A `transitions` machine of this declaration (for diagrams and tests, not per entity)."""
        kwargs: dict[str, Any] = {
            "model": model if model is not None else Machine.self_literal,
            "states": self.states,
            "transitions": [dict(t) for t in self.transitions],
            "initial": self.initial,
            "auto_transitions": False,
            "send_event": True,
        }
        if graph:
            from transitions.extensions import GraphMachine

            return GraphMachine(**kwargs, graph_engine="mermaid", show_conditions=True)
        return Machine(**kwargs)

    @cached_property
    def table(self) -> dict[tuple[S, str], Route]:
        """(state, trigger) -> ordered (dest, guard names) alternatives, read off the Machine."""
        machine = self.machine(_GuardStub(self.guards))
        table: dict[tuple[S, str], Route] = {}
        for trigger, event in machine.events.items():
            for source, transitions in event.transitions.items():
                table[(self.states[source], trigger)] = tuple(
                    (self.states[str(t.dest)], tuple(str(c.func) for c in t.conditions))
                    for t in transitions
                )
        return table

    @cached_property
    def triggers(self) -> tuple[str, ...]:
        """Every trigger, in declaration order."""
        return tuple(dict.fromkeys(str(t["trigger"]) for t in self.transitions))

    @cached_property
    def _compiled(self) -> dict[tuple[S, str], tuple[tuple[S, tuple[Guard, ...]], ...]]:
        return {
            key: tuple((dest, tuple(self.guards[g] for g in names)) for dest, names in alts)
            for key, alts in self.table.items()
        }

    @cached_property
    def _recorded(self) -> dict[tuple[S, str], S]:
        for (state, trigger), alts in self.table.items():
            # The last alternative is a recorded event's destination: every earlier one must
            # demand all of its guards and more, so the declaration's order cannot mislead.
            last = set(alts[-1][1])
            if any(not last < set(guards) for _, guards in alts[:-1]):
                raise ValueError(
                    f"{self.entity}: the alternatives of {trigger!r} from {state.name} must"
                    " end with the least guarded one"
                )
        return {key: alts[-1][0] for key, alts in self.table.items()}

    def recorded_destination(self, entity_id: str, state: S, trigger: str | None) -> S:
        """Where an event recording `trigger` leaves an entity in `state` (None: it stays).

        Guards were checked when the event was decided; a recorded event is a fact, so the
        last (least guarded) alternative is its destination. A trigger the state does not
        accept means a corrupt history and raises InvalidTransition.
        """
        if trigger is None:
            return state
        try:
            return self._recorded[(state, trigger)]
        except KeyError:
            raise InvalidTransition(self.entity, entity_id, state.value, trigger) from None

    @cached_property
    def _memo(self) -> dict[tuple[S, Hashable], S]:
        return {}

    def after(
        self,
        entity_id: str,
        state: S,
        key: Hashable,
        trigger_of: Callable[[S, E], str | None],
        event: E,
    ) -> S:
        """`recorded_destination` of `trigger_of(state, event)`, remembered by (state, key).

        `key` must determine the trigger (the event's type, or what in it decides): a
        rebuild asks this for every event, and the memo keeps it a dict lookup.
        """
        found = self._memo.get((state, key))
        if found is None:
            trigger = trigger_of(state, event)
            found = self._memo[(state, key)] = self.recorded_destination(entity_id, state, trigger)
        return found

    def accepts(self, state: S, trigger: str, aggregate: object, command: object) -> bool:
        """Whether `trigger` may fire from `state` for this aggregate and command."""
        return self._destination(state, trigger, aggregate, command) is not None

    def _destination(self, state: S, trigger: str, aggregate: object, command: object) -> S | None:
        for dest, guards in self._compiled.get((state, trigger), ()):
            for guard in guards:
                if not guard(aggregate, command):
                    break
            else:
                return dest
        return None

    def route(
        self, entity_id: str, state: S, trigger: str, aggregate: object, command: object
    ) -> S:
        """The destination of `trigger` from `state`, or InvalidTransition."""
        dest = self._destination(state, trigger, aggregate, command)
        if dest is None:
            raise InvalidTransition(self.entity, entity_id, state.value, trigger)
        return dest


class _GuardStub:
    """A model with a method per guard name, so `transitions` accepts the declaration."""

    def __init__(self, guards: Mapping[str, Guard]) -> None:
        for name in guards:
            setattr(self, name, lambda *_: True)
