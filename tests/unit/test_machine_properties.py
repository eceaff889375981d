"""Property: the transitions Machine and decide/evolve agree on every random trigger sequence."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from transitions import MachineError

from statemachine import batch as batch_agg
from statemachine import request as request_agg
from statemachine.commands import PlanBatch, QueueRequest
from statemachine.errors import InvalidTransition
from statemachine.machine import Declaration
from statemachine.states import BatchState, RequestState
from tests.unit.machines import batch_command, request_command


class Model:
    """A transitions model whose guards read the aggregate that decide/evolve maintain."""

    def __init__(self, declaration: Declaration[Any], aggregate: Any) -> None:
        self.aggregate = aggregate
        for name, guard in declaration.guards.items():
            setattr(
                self,
                name,
                lambda event, guard=guard: guard(self.aggregate, event.kwargs["command"]),
            )


def fire(model: Any, trigger: str, command: Any) -> bool:
    """Fire on the Machine; True when it moved."""
    try:
        return bool(model.trigger(trigger, command=command))
    except MachineError:
        return False


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(request_agg.REQUEST_MACHINE.triggers),
            st.booleans(),
            st.integers(min_value=1, max_value=4),
        ),
        max_size=40,
    )
)
def test_random_request_triggers_keep_machine_and_fold_in_step(
    steps: list[tuple[str, bool, int]],
) -> None:
    queued = request_agg.decide(
        None,
        QueueRequest(request_id="r1", company_id="a", session_id="s", model="m", transcript="t"),
    )
    state = request_agg.fold(queued)  # type: ignore[arg-type]
    history = list(queued)
    model = Model(request_agg.REQUEST_MACHINE, state)
    request_agg.REQUEST_MACHINE.machine(model)
    for trigger, retryable, max_attempts in steps:
        command = request_command(trigger, retryable=retryable, max_attempts=max_attempts)
        if trigger == "assign":
            command = type(command)(batch_id="b1")
        moved = fire(model, trigger, command)
        try:
            events = request_agg.decide(state, command)
        except InvalidTransition:
            assert not moved
            continue
        assert moved
        history += events
        for e in events:
            state = request_agg.evolve(state, e)
        model.aggregate = state
        assert model.state is state.state
    assert state is not None
    assert state.state in set(RequestState)
    assert request_agg.fold(history) == state  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(batch_agg.BATCH_MACHINE.triggers), max_size=30))
def test_random_batch_triggers_keep_machine_and_fold_in_step(triggers: list[str]) -> None:
    planned = batch_agg.decide(
        None, PlanBatch(batch_id="b1", company_id="a", model="m", request_ids=["r1"])
    )
    state = batch_agg.fold(planned)  # type: ignore[arg-type]
    history = list(planned)
    model = Model(batch_agg.BATCH_MACHINE, state)
    batch_agg.BATCH_MACHINE.machine(model)
    for trigger in triggers:
        assert state is not None
        command = batch_command(trigger, state.state)
        try:
            events = batch_agg.decide(state, command)
        except InvalidTransition as refused:
            refused_trigger = refused.trigger
            events = None
        if events is None:
            assert not fire(model, refused_trigger, command)
            continue
        if not events:  # an observation with nothing new: not a transition
            continue
        fired = (
            trigger
            if not trigger.startswith(("mark_", "observe")) or trigger == "mark_processed"
            else None
        )
        if fired is None:
            fired = batch_agg.observe_trigger(state, command)
        assert fire(model, fired, command)
        history += events
        for e in events:
            state = batch_agg.evolve(state, e)
        model.aggregate = state
        assert model.state is state.state
    assert state is not None
    assert state.state in set(BatchState)
    assert batch_agg.fold(history) == state  # type: ignore[arg-type]
