"""Property: the status tables follow the aggregates event by event.

`projections.requests.project` and `projections.batches.project` build the rows of the
status tables from recorded events; `evolve` builds the aggregates from the same events.
Both read the next state off the machine's declaration (`next_state`). Over random
histories that `decide` produces, after every single event the row must show the state
and the ids the aggregate holds; and a history the machine cannot produce must be refused
by both, not silently projected.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.model import EventMetadata, RecordedEvent
from projections import batches as batches_projection
from projections import requests as requests_projection
from statemachine import batch as batch_agg
from statemachine import request as request_agg
from statemachine.commands import (
    FinishIngestion,
    ObserveStatus,
    PlanBatch,
    QueueRequest,
    RecordSubmission,
    RecordUpload,
    RejectedLine,
)
from statemachine.errors import InvalidTransition
from statemachine.events import (
    BatchPlanned,
    BatchProcessed,
    Event,
    RequestBatched,
    RequestQueued,
    tag_of,
)
from statemachine.states import BatchState
from tests.unit.machines import batch_command, request_command

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def recorded(stream_id: str, n: int, event: Event) -> RecordedEvent:
    """The n-th event (1-based) of a stream, as the store would hand it to a projection."""
    at = T0 + timedelta(seconds=n)
    return RecordedEvent(
        position=n,
        stream_id=stream_id,
        version=n,
        id=uuid.uuid4(),
        type=tag_of(type(event)),
        data=msgspec.json.encode(event).decode(),
        metadata=EventMetadata(occurred_at=at, actor="test"),
        recorded_at=at,
    )


# --- requests ---------------------------------------------------------------------------

REQUEST_STEPS = st.lists(
    st.tuples(
        st.sampled_from(request_agg.REQUEST_MACHINE.triggers),
        st.booleans(),  # retryable
        st.integers(min_value=1, max_value=4),  # max_attempts
        st.sampled_from(["b1", "b2"]),  # batch an assign names; complete/fail name b1
    ),
    min_size=10,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(REQUEST_STEPS)
def test_requests_projection_status_equals_evolve_after_every_event(
    steps: list[tuple[str, bool, int, str]],
) -> None:
    queued = request_agg.decide(
        None,
        QueueRequest(request_id="r1", company_id="a", session_id="s", model="m", transcript="t"),
    )
    state: request_agg.Request | None = None
    row: requests_projection.RequestRow | None = None
    n = 0

    def apply(events: Sequence[Any]) -> None:
        nonlocal state, row, n
        for event in events:
            n += 1
            state = request_agg.evolve(state, event)
            row = requests_projection.project(row, recorded("request-r1", n, event), event)
            assert row is not None
            assert (row.status, row.batch_id, row.attempts, row.version) == (
                state.state,
                state.batch_id,
                state.attempts,
                state.version,
            ), f"after event {n} ({type(event).__name__})"

    apply(queued)
    for trigger, retryable, max_attempts, batch_id in steps:
        command = request_command(trigger, retryable=retryable, max_attempts=max_attempts)
        if trigger == "assign":
            command = type(command)(batch_id=batch_id)
        try:
            events = request_agg.decide(state, command)
        except InvalidTransition:
            continue  # refused: nothing recorded
        apply(events)


# --- batches ----------------------------------------------------------------------------

# Uniform triggers are mostly refused from PENDING and UPLOADING, and fail_submission ends
# most histories early: few would reach VALIDATING. So half the steps fire a trigger
# the current state accepts (read off the declaration), the rest any trigger at all.
BATCH_STEPS = st.lists(
    st.tuples(
        st.sampled_from(batch_agg.BATCH_MACHINE.triggers),  # any trigger
        st.booleans(),  # instead, one the current state accepts?
        st.integers(min_value=0, max_value=15),  # which accepted trigger
        st.integers(min_value=0, max_value=3),  # which file ids / how many rejected lines
    ),
    min_size=10,
    max_size=40,
)


def accepted(state: BatchState) -> list[str]:
    """The triggers the batch machine declares from `state`, in declaration order."""
    table = batch_agg.BATCH_MACHINE.table
    return [t for t in batch_agg.BATCH_MACHINE.triggers if (state, t) in table]


BATCH_FIELDS = (
    "openai_batch_id",
    "input_file_id",
    "output_file_id",
    "error_file_id",
    "openai_status",
)


def vary(command: Any, k: int) -> Any:
    """The command with ids (or rejected lines) chosen by k, so later events overwrite."""
    replace = msgspec.structs.replace
    match command:
        case ObserveStatus():
            return replace(
                command,
                output_file_id=f"file-out-{k}" if k & 1 else None,
                error_file_id=f"file-err-{k}" if k & 2 else None,
            )
        case RecordUpload():
            return replace(command, input_file_id=f"file-in-{k}")
        case RecordSubmission():
            return replace(command, openai_batch_id=f"batch_{k}", input_file_id=f"file-in-{k}")
        case FinishIngestion():
            lines = [RejectedLine(file_id="file-out-1", line=i, kind="malformed") for i in range(k)]
            return replace(command, rejected=lines)
        case _:
            return command


SUBMISSION = ("begin_upload", "record_upload", "submit")
"""The path to VALIDATING; random steps end most histories before it (fail_submission)."""


@settings(max_examples=300, deadline=None)
@given(st.booleans(), BATCH_STEPS)
def test_batches_projection_status_equals_evolve_after_every_event(
    submitted_first: bool,
    steps: list[tuple[str, bool, int, int]],
) -> None:
    planned = batch_agg.decide(
        None, PlanBatch(batch_id="b1", company_id="a", model="m", request_ids=["r1"])
    )
    state: batch_agg.Batch | None = None
    row: batches_projection.BatchRow | None = None
    n = 0

    def apply(events: Sequence[Any]) -> None:
        nonlocal state, row, n
        for event in events:
            n += 1
            state = batch_agg.evolve(state, event)
            row = batches_projection.project(row, recorded("batch-b1", n, event), event)
            assert row is not None
            where = f"after event {n} ({type(event).__name__})"
            assert row.status is state.state, where
            assert row.version == state.version, where
            for field in BATCH_FIELDS:
                assert getattr(row, field) == getattr(state, field), f"{field} {where}"

    apply(planned)
    for trigger in SUBMISSION if submitted_first else ():
        assert state is not None
        apply(batch_agg.decide(state, batch_command(trigger, state.state)))
    for any_trigger, follow, pick, k in steps:
        assert state is not None
        choices = accepted(state.state)
        trigger = choices[pick % len(choices)] if follow and choices else any_trigger
        command = vary(batch_command(trigger, state.state), k)
        try:
            events = batch_agg.decide(state, command)
        except InvalidTransition:
            continue  # refused: nothing recorded
        apply(events)  # an observation with nothing new decides no event at all


# --- histories the machine cannot produce -----------------------------------------------

IMPOSSIBLE = [
    pytest.param(
        "request-r1",
        request_agg.evolve,
        requests_projection.project,
        [
            RequestQueued(
                request_id="r1", company_id="a", session_id="s", model="m", transcript="t"
            ),
            RequestBatched(request_id="r1", batch_id="b1", attempt=1),
            RequestBatched(request_id="r1", batch_id="b2", attempt=2),
        ],
        id="RequestBatched-twice",
    ),
    pytest.param(
        "batch-b1",
        batch_agg.evolve,
        batches_projection.project,
        [
            BatchPlanned(batch_id="b1", company_id="a", model="m", request_ids=["r1"]),
            BatchProcessed(batch_id="b1", completed=1, failed=0, missing=0),
        ],
        id="BatchProcessed-on-PENDING",
    ),
]


@pytest.mark.parametrize(("stream_id", "evolve", "project", "history"), IMPOSSIBLE)
def test_impossible_history_is_refused_by_both_evolve_and_projection(
    stream_id: str,
    evolve: Callable[[Any, Any], Any],
    project: Callable[[Any, RecordedEvent, Any], Any],
    history: list[Any],
) -> None:
    *valid, bad = history
    state, row = None, None
    for n, event in enumerate(valid, start=1):
        state = evolve(state, event)
        row = project(row, recorded(stream_id, n, event), event)
    assert row is not None
    with pytest.raises(InvalidTransition):
        evolve(state, bad)
    with pytest.raises(InvalidTransition):
        project(row, recorded(stream_id, len(history), bad), bad)
