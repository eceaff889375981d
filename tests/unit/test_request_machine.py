"""The request machine: every (state, trigger) pair, guards, retry rule, bulk decisions."""

from __future__ import annotations

import pytest

from statemachine.commands import AssignToBatch, FailRequest, QueueRequest, RequeueRequest
from statemachine.errors import AlreadyExists, InvalidTransition
from statemachine.events import (
    RequestBatched,
    RequestCompleted,
    RequestFailed,
    RequestQueued,
    RequestRequeued,
)
from statemachine.request import REQUEST_MACHINE, decide, decide_many, evolve, fold
from statemachine.states import RequestState as RS
from tests.unit.machines import request_command, request_in

ALLOWED = {
    (RS.PENDING_BATCHING, "assign"): (RS.BATCHING_IN_PROGRESS, [RequestBatched]),
    (RS.BATCHING_IN_PROGRESS, "complete"): (RS.PROCESSING_COMPLETE, [RequestCompleted]),
    (RS.BATCHING_IN_PROGRESS, "fail"): (RS.PENDING_BATCHING, [RequestFailed, RequestRequeued]),
    (RS.PROCESSING_FAILED, "requeue"): (RS.PENDING_BATCHING, [RequestRequeued]),
}
PAIRS = [(s, t) for s in RS for t in REQUEST_MACHINE.triggers]


def test_the_table_derived_from_the_declaration_allows_exactly_the_documented_pairs() -> None:
    assert {key for key in REQUEST_MACHINE.table} == set(ALLOWED)


@pytest.mark.parametrize(("state", "trigger"), PAIRS, ids=[f"{s.value}-{t}" for s, t in PAIRS])
def test_every_state_and_trigger_pair_gives_its_events_or_a_domain_error(
    state: RS, trigger: str
) -> None:
    request = request_in(state)
    command = request_command(trigger)
    if (state, trigger) in ALLOWED:
        dest, kinds = ALLOWED[(state, trigger)]
        events = decide(request, command)
        assert [type(e) for e in events] == kinds
        after = request
        for e in events:
            after = evolve(after, e)
        assert after.state is dest
        assert after.version == request.version + len(events)
    else:
        with pytest.raises(InvalidTransition) as info:
            decide(request, command)
        assert (info.value.entity, info.value.state, info.value.trigger) == (
            "request",
            state.value,
            trigger,
        )
        assert state.value in str(info.value)
        assert trigger in str(info.value)


def test_queue_creates_a_pending_request_and_refuses_a_second_time() -> None:
    cmd = QueueRequest(
        request_id="r1", company_id="acme", session_id="s1", model="m", transcript="hi"
    )
    (queued,) = decide(None, cmd)
    assert isinstance(queued, RequestQueued)
    state = evolve(None, queued)
    assert (state.state, state.version, state.attempts) == (RS.PENDING_BATCHING, 1, 0)
    with pytest.raises(AlreadyExists):
        decide(state, cmd)


def test_retryable_failure_returns_to_pending_until_attempts_are_used_up() -> None:
    exhausted = request_in(RS.BATCHING_IN_PROGRESS, attempts=3)
    events = decide(exhausted, request_command("fail", max_attempts=3))
    assert [type(e) for e in events] == [RequestFailed]
    assert fold_from(exhausted, events).state is RS.PROCESSING_FAILED


def test_non_retryable_failure_fails_at_once() -> None:
    first = request_in(RS.BATCHING_IN_PROGRESS, attempts=1)
    events = decide(first, request_command("fail", retryable=False))
    assert fold_from(first, events).state is RS.PROCESSING_FAILED


def test_outcome_of_an_earlier_batch_is_refused_after_the_request_moved_on() -> None:
    request = request_in(RS.BATCHING_IN_PROGRESS)
    stale = FailRequest(batch_id="old", code="x", message="late", retryable=True, max_attempts=3)
    with pytest.raises(InvalidTransition):
        decide(request, stale)


def test_admin_requeue_gives_a_fresh_budget_of_attempts() -> None:
    state = fold(
        [
            RequestQueued(
                request_id="r1", company_id="a", session_id="s", model="m", transcript="t"
            ),
            *[
                e
                for n in (1, 2, 3)
                for e in (
                    RequestBatched(request_id="r1", batch_id=f"b{n}", attempt=n),
                    RequestFailed(
                        request_id="r1",
                        batch_id=f"b{n}",
                        code="x",
                        message="m",
                        retryable=True,
                        attempt=n,
                    ),
                    # decide retries the first two attempts: a history evolve accepts
                    *([RequestRequeued(request_id="r1", reason="retry")] if n < 3 else []),
                )
            ],
        ]
    )
    assert state is not None
    assert state.state is RS.PROCESSING_FAILED
    state = fold_from(state, decide(state, RequeueRequest()))
    state = fold_from(state, decide(state, AssignToBatch(batch_id="b4")))
    events = decide(
        state, FailRequest(batch_id="b4", code="x", message="m", retryable=True, max_attempts=3)
    )
    assert fold_from(state, events).state is RS.PENDING_BATCHING
    assert state.attempts == 4


def test_decide_many_assigns_a_whole_batch_and_stops_at_a_request_that_cannot_move() -> None:
    pending = [request_in(RS.PENDING_BATCHING) for _ in range(1000)]
    decided = decide_many(pending, AssignToBatch(batch_id="b9"))
    assert all(isinstance(ev[0], RequestBatched) and ev[0].batch_id == "b9" for ev in decided)
    with pytest.raises(InvalidTransition):
        decide_many([*pending, request_in(RS.PROCESSING_COMPLETE)], AssignToBatch(batch_id="b9"))


def test_decide_many_applies_guards_per_request() -> None:
    fresh, spent = (
        request_in(RS.BATCHING_IN_PROGRESS, attempts=1),
        request_in(RS.BATCHING_IN_PROGRESS, attempts=3),
    )
    out = decide_many([fresh, spent], request_command("fail"))
    assert [len(e) for e in out] == [2, 1]


def fold_from(state, events):  # type: ignore[no-untyped-def]
    for e in events:
        state = evolve(state, e)
    return state
