"""The batch machine: every (state, trigger) pair, observations, and the OpenAI status table."""

from __future__ import annotations

import pytest

from statemachine.batch import BATCH_MACHINE, decide, evolve
from statemachine.commands import ObserveStatus, PlanBatch, ReleaseRequests
from statemachine.errors import AlreadyExists, InvalidTransition
from statemachine.events import BatchPlanned, RequestCounts
from statemachine.openai_status import OPENAI_STATUS_TO_STATE, UnknownOpenAIStatus, state_for
from statemachine.states import BatchState as BS
from tests.unit.machines import batch_command, batch_in

ACTIVE = [BS.VALIDATING, BS.IN_PROGRESS, BS.FINALIZING]
IN_FLIGHT = [*ACTIVE, BS.CANCELLING]
ALLOWED: dict[tuple[BS, str], BS] = {
    (BS.PENDING, "begin_upload"): BS.UPLOADING,
    (BS.UPLOADING, "begin_upload"): BS.UPLOADING,
    (BS.UPLOADING, "record_upload"): BS.UPLOADING,
    (BS.UPLOADING, "submit"): BS.VALIDATING,
    (BS.PENDING, "fail_submission"): BS.FAILED,
    (BS.UPLOADING, "fail_submission"): BS.FAILED,
    (BS.VALIDATING, "mark_in_progress"): BS.IN_PROGRESS,
    (BS.VALIDATING, "mark_finalizing"): BS.FINALIZING,
    (BS.IN_PROGRESS, "mark_finalizing"): BS.FINALIZING,
    (BS.CANCELLING, "mark_validating"): BS.CANCELLING,
    (BS.CANCELLING, "mark_in_progress"): BS.CANCELLING,
    (BS.CANCELLING, "mark_finalizing"): BS.CANCELLING,
    **{(s, "mark_completed"): BS.COMPLETED for s in IN_FLIGHT},
    **{(s, "mark_failed"): BS.FAILED for s in IN_FLIGHT},
    **{(s, "mark_expired"): BS.EXPIRED for s in IN_FLIGHT},
    **{(s, "mark_cancelled"): BS.CANCELLED for s in IN_FLIGHT},
    **{(s, "mark_cancelling"): BS.CANCELLING for s in ACTIVE},
    **{(s, "observe_progress"): s for s in IN_FLIGHT},
    **{(s, "cancel"): BS.CANCELLING for s in ACTIVE},
    **{(s, "mark_processed"): BS.PROCESSED for s in (BS.COMPLETED, BS.EXPIRED, BS.CANCELLED)},
    (BS.FAILED, "release_requests"): BS.FAILED,
}
PAIRS = [(s, t) for s in BS for t in BATCH_MACHINE.triggers]


def test_the_table_derived_from_the_declaration_allows_exactly_the_documented_pairs() -> None:
    derived = {key: alts[0][0] for key, alts in BATCH_MACHINE.table.items()}
    assert derived == ALLOWED


@pytest.mark.parametrize(("state", "trigger"), PAIRS, ids=[f"{s.value}-{t}" for s, t in PAIRS])
def test_every_state_and_trigger_pair_gives_its_events_or_a_domain_error(
    state: BS, trigger: str
) -> None:
    batch = batch_in(state)
    command = batch_command(trigger, state)
    allowed = (state, trigger) in ALLOWED
    if (
        allowed
        and state is BS.CANCELLING
        and trigger in ("mark_validating", "mark_in_progress", "mark_finalizing")
    ):
        command = ObserveStatus(
            openai_status=command.openai_status, request_counts=RequestCounts(total=2, failed=1)
        )
    if allowed:
        events = decide(batch, command)
        assert events, "an accepted trigger yields at least one event"
        after = batch
        for e in events:
            after = evolve(after, e)
        assert after.state is ALLOWED[(state, trigger)]
        assert after.version == batch.version + len(events)
    elif trigger == f"mark_{state.value.lower()}":
        # Seeing the status the batch is already in is observe_progress, not mark_*:
        # the machine itself refuses the pair.
        with pytest.raises(InvalidTransition):
            BATCH_MACHINE.route(batch.batch_id, state, trigger, batch, command)
    else:
        with pytest.raises(InvalidTransition) as info:
            decide(batch, command)
        assert info.value.entity == "batch"
        assert info.value.state == state.value


def test_submit_needs_a_recorded_input_file() -> None:
    import msgspec

    batch = msgspec.structs.replace(batch_in(BS.UPLOADING), input_file_id=None)
    with pytest.raises(InvalidTransition):
        decide(batch, batch_command("submit", BS.UPLOADING))


def test_failed_batch_releases_its_requests_once() -> None:
    batch = batch_in(BS.FAILED)
    (released,) = decide(batch, ReleaseRequests(requeued=2, failed=0))
    with pytest.raises(InvalidTransition):
        decide(evolve(batch, released), ReleaseRequests(requeued=2, failed=0))


def test_an_observation_that_shows_nothing_new_records_no_event() -> None:
    batch = batch_in(BS.IN_PROGRESS)
    assert decide(batch, ObserveStatus(openai_status="in_progress")) == []


def test_plan_creates_a_pending_batch_and_refuses_a_second_time() -> None:
    cmd = PlanBatch(batch_id="b1", company_id="acme", model="m", request_ids=["r1"])
    (planned,) = decide(None, cmd)
    assert isinstance(planned, BatchPlanned)
    assert evolve(None, planned).state is BS.PENDING
    with pytest.raises(AlreadyExists):
        decide(evolve(None, planned), cmd)


def test_every_openai_status_maps_to_exactly_one_batch_state() -> None:
    statuses = [
        "validating",
        "failed",
        "in_progress",
        "finalizing",
        "completed",
        "expired",
        "cancelling",
        "cancelled",
    ]
    assert sorted(OPENAI_STATUS_TO_STATE) == sorted(statuses)
    assert {state_for(s) for s in statuses} <= set(BS)
    assert len({state_for(s) for s in statuses}) == len(statuses)
    with pytest.raises(UnknownOpenAIStatus):
        state_for("paused")
