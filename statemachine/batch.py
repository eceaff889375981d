"""The Batch aggregate: its machine, state, decide and evolve."""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

import msgspec

from statemachine.commands import (
    CancelBatch,
    FailSubmission,
    FinishIngestion,
    ObserveStatus,
    PlanBatch,
    RecordSubmission,
    RecordUpload,
    ReleaseRequests,
    StartUpload,
)
from statemachine.decider import Decider, one_at_a_time
from statemachine.errors import AlreadyExists, InvalidTransition, NotFound
from statemachine.events import (
    BatchCancelRequested,
    BatchError,
    BatchEvent,
    BatchFileUploaded,
    BatchOutputLineRejected,
    BatchPlanned,
    BatchProcessed,
    BatchRequestsReleased,
    BatchStatusObserved,
    BatchStatusUnrecognized,
    BatchSubmissionFailed,
    BatchSubmitted,
    BatchUploadStarted,
    RequestCounts,
)
from statemachine.machine import Declaration
from statemachine.openai_status import STATE_TO_TRIGGER, is_known, state_for
from statemachine.states import ACTIVE, IN_FLIGHT
from statemachine.states import BatchState as BS

BatchCommand = (
    PlanBatch
    | StartUpload
    | RecordUpload
    | RecordSubmission
    | FailSubmission
    | ObserveStatus
    | CancelBatch
    | FinishIngestion
    | ReleaseRequests
)


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """A batch as its events left it; `version` is its stream version.

    `errors` are the reasons a failed batch failed, as OpenAI reported them (`errors.data`,
    with the input line each one names) or as our submission was refused; `failure_code`
    and `failure_message` repeat the first of them.
    """

    batch_id: str
    company_id: str
    model: str
    request_ids: list[str]
    state: BS = BS.PENDING
    upload_filename: str | None = None
    input_file_id: str | None = None
    openai_batch_id: str | None = None
    openai_status: str | None = None
    request_counts: RequestCounts = msgspec.field(default_factory=RequestCounts)
    output_file_id: str | None = None
    error_file_id: str | None = None
    released: bool = False
    failure_code: str | None = None
    failure_message: str | None = None
    errors: list[BatchError] = msgspec.field(default_factory=list)
    version: int = 0


_ACTIVE = sorted(ACTIVE)
_IN_FLIGHT = sorted(IN_FLIGHT)


def _has_input_file(b: Batch, _: object) -> bool:
    return b.input_file_id is not None


def _not_released(b: Batch, _: object) -> bool:
    return not b.released


BATCH_MACHINE: Declaration[BS] = Declaration(
    entity="batch",
    states=BS,
    initial=BS.PENDING,
    transitions=[
        {"trigger": "begin_upload", "source": [BS.PENDING, BS.UPLOADING], "dest": BS.UPLOADING},
        {"trigger": "record_upload", "source": BS.UPLOADING, "dest": BS.UPLOADING},
        {
            "trigger": "submit",
            "source": BS.UPLOADING,
            "dest": BS.VALIDATING,
            "conditions": ["has_input_file"],
        },
        {"trigger": "fail_submission", "source": [BS.PENDING, BS.UPLOADING], "dest": BS.FAILED},
        {"trigger": "mark_validating", "source": [BS.CANCELLING], "dest": BS.CANCELLING},
        {"trigger": "mark_in_progress", "source": [BS.VALIDATING], "dest": BS.IN_PROGRESS},
        {"trigger": "mark_in_progress", "source": [BS.CANCELLING], "dest": BS.CANCELLING},
        {
            "trigger": "mark_finalizing",
            "source": [BS.VALIDATING, BS.IN_PROGRESS],
            "dest": BS.FINALIZING,
        },
        {"trigger": "mark_finalizing", "source": [BS.CANCELLING], "dest": BS.CANCELLING},
        {"trigger": "mark_completed", "source": _IN_FLIGHT, "dest": BS.COMPLETED},
        {"trigger": "mark_failed", "source": _IN_FLIGHT, "dest": BS.FAILED},
        {"trigger": "mark_expired", "source": _IN_FLIGHT, "dest": BS.EXPIRED},
        {"trigger": "mark_cancelling", "source": _ACTIVE, "dest": BS.CANCELLING},
        {"trigger": "mark_cancelled", "source": _IN_FLIGHT, "dest": BS.CANCELLED},
        {"trigger": "observe_progress", "source": _IN_FLIGHT, "dest": "="},
        {"trigger": "cancel", "source": _ACTIVE, "dest": BS.CANCELLING},
        {
            "trigger": "mark_processed",
            "source": [BS.COMPLETED, BS.EXPIRED, BS.CANCELLED],
            "dest": BS.PROCESSED,
        },
        {
            "trigger": "release_requests",
            "source": BS.FAILED,
            "dest": BS.FAILED,
            "conditions": ["not_released"],
        },
    ],
    guards={"has_input_file": _has_input_file, "not_released": _not_released},
)


def status_trigger(state: BS, openai_status: str) -> str:
    """The trigger an observed OpenAI status fires from `state`."""
    target = state_for(openai_status)
    return "observe_progress" if target is state else STATE_TO_TRIGGER[target]


def observe_trigger(b: Batch, c: ObserveStatus) -> str | None:
    """The trigger an observation fires, or None when it shows nothing new: it would leave
    the batch where it is (as the declaration says, e.g. CANCELLING while OpenAI still
    reports it running) and repeats what OpenAI reported last time."""
    trigger = status_trigger(b.state, c.openai_status)
    dest = BATCH_MACHINE.route(b.batch_id, b.state, trigger, b, c)
    seen = (c.openai_status, c.request_counts, c.output_file_id, c.error_file_id)
    known = (b.openai_status, b.request_counts, b.output_file_id, b.error_file_id)
    return None if dest is b.state and seen == known else trigger


def decide(state: Batch | None, command: BatchCommand) -> list[BatchEvent]:
    """The events a command produces for a batch, or a DomainError.

    An observation that shows nothing new is not a transition and yields no event.
    """
    if isinstance(command, PlanBatch):
        if state is not None:
            raise AlreadyExists("batch", command.batch_id)
        return [
            BatchPlanned(
                batch_id=command.batch_id,
                company_id=command.company_id,
                model=command.model,
                request_ids=command.request_ids,
            )
        ]
    if state is None:
        raise NotFound("batch", "?")
    trigger = command.trigger
    if isinstance(command, ObserveStatus):
        if not is_known(command.openai_status):
            return _unrecognized(state, command)
        found = observe_trigger(state, command)
        if found is None:
            return []
        trigger = found
    BATCH_MACHINE.route(state.batch_id, state.state, trigger, state, command)
    return _emit(state.batch_id, command)


def _unrecognized(state: Batch, c: ObserveStatus) -> list[BatchEvent]:
    """A status we cannot map is kept as seen, once, and moves nothing: the batch waits in
    its state until OpenAI reports a status we know."""
    if state.state not in IN_FLIGHT:
        trigger = f"observe {c.openai_status!r}"
        raise InvalidTransition("batch", state.batch_id, state.state.value, trigger)
    if (c.openai_status, c.request_counts) == (state.openai_status, state.request_counts):
        return []
    return [
        BatchStatusUnrecognized(
            batch_id=state.batch_id,
            openai_status=c.openai_status,
            request_counts=c.request_counts,
        )
    ]


def _emit(bid: str, c: BatchCommand) -> list[BatchEvent]:
    match c:
        case PlanBatch():
            raise AssertionError("PlanBatch is decided before any state exists")
        case StartUpload():
            return [BatchUploadStarted(batch_id=bid, filename=c.filename)]
        case RecordUpload():
            return [BatchFileUploaded(batch_id=bid, input_file_id=c.input_file_id, bytes=c.bytes)]
        case RecordSubmission():
            return [
                BatchSubmitted(
                    batch_id=bid,
                    openai_batch_id=c.openai_batch_id,
                    input_file_id=c.input_file_id,
                    reconciled=c.reconciled,
                )
            ]
        case FailSubmission():
            return [BatchSubmissionFailed(batch_id=bid, code=c.code, message=c.message)]
        case ObserveStatus():
            return [
                BatchStatusObserved(
                    batch_id=bid,
                    openai_status=c.openai_status,
                    request_counts=c.request_counts,
                    output_file_id=c.output_file_id,
                    error_file_id=c.error_file_id,
                    errors=c.errors,
                )
            ]
        case CancelBatch():
            return [BatchCancelRequested(batch_id=bid)]
        case FinishIngestion():
            rejected: list[BatchEvent] = [
                BatchOutputLineRejected(batch_id=bid, **msgspec.structs.asdict(r))
                for r in c.rejected
            ]
            done = BatchProcessed(
                batch_id=bid,
                completed=c.completed,
                failed=c.failed,
                missing=c.missing,
                rejected_lines=len(c.rejected),
            )
            return [*rejected, done]
        case ReleaseRequests():
            return [BatchRequestsReleased(batch_id=bid, requeued=c.requeued, failed=c.failed)]
        case _:
            assert_never(c)


def recorded_trigger(state: BS, event: BatchEvent) -> str | None:
    """The trigger an event records (None: recorded without a transition)."""
    match event:
        case BatchPlanned() | BatchOutputLineRejected() | BatchStatusUnrecognized():
            return None
        case BatchUploadStarted():
            return "begin_upload"
        case BatchFileUploaded():
            return "record_upload"
        case BatchSubmitted():
            return "submit"
        case BatchSubmissionFailed():
            return "fail_submission"
        case BatchStatusObserved():
            return status_trigger(state, event.openai_status)
        case BatchCancelRequested():
            return "cancel"
        case BatchProcessed():
            return "mark_processed"
        case BatchRequestsReleased():
            return "release_requests"
        case _:
            assert_never(event)


def next_state(batch_id: str, state: BS, event: BatchEvent) -> BS:
    """The state after one event, read off the declaration: the one rule evolve and the
    projections share."""
    # An observation's trigger depends on the status it saw; every other event's on its type.
    key = event.openai_status if isinstance(event, BatchStatusObserved) else type(event)
    return BATCH_MACHINE.after(batch_id, state, key, recorded_trigger, event)


def evolve(state: Batch | None, event: BatchEvent) -> Batch:
    """The batch after one event."""
    if isinstance(event, BatchPlanned):
        return Batch(
            batch_id=event.batch_id,
            company_id=event.company_id,
            model=event.model,
            request_ids=event.request_ids,
            version=1,
        )
    assert state is not None, f"{type(event).__name__} before BatchPlanned"
    moved = msgspec.structs.replace(
        state, state=next_state(state.batch_id, state.state, event), version=state.version + 1
    )
    return _record(moved, event)


def _record(b: Batch, event: BatchEvent) -> Batch:
    replace = msgspec.structs.replace
    match event:
        case BatchUploadStarted():
            return replace(b, upload_filename=event.filename)
        case BatchFileUploaded():
            return replace(b, input_file_id=event.input_file_id)
        case BatchSubmitted():
            return replace(
                b,
                openai_batch_id=event.openai_batch_id,
                input_file_id=event.input_file_id,
                openai_status="validating",
            )
        case BatchSubmissionFailed():
            return replace(
                b,
                failure_code=event.code,
                failure_message=event.message,
                errors=[BatchError(code=event.code, message=event.message)],
            )
        case BatchStatusObserved():
            first = event.errors[0] if event.errors else None
            return replace(
                b,
                failure_code=first.code if first else b.failure_code,
                failure_message=first.message if first else b.failure_message,
                errors=list(event.errors) if event.errors else b.errors,
                openai_status=event.openai_status,
                request_counts=event.request_counts,
                output_file_id=event.output_file_id,
                error_file_id=event.error_file_id,
            )
        case BatchStatusUnrecognized():
            return replace(
                b, openai_status=event.openai_status, request_counts=event.request_counts
            )
        case BatchRequestsReleased():
            return replace(b, released=True)
        case BatchPlanned() | BatchCancelRequested() | BatchOutputLineRejected() | BatchProcessed():
            return b
        case _:
            assert_never(event)


def fold(events: Sequence[BatchEvent]) -> Batch | None:
    """The batch its events describe (None for no events)."""
    return BATCHES.fold(events)


_decode = msgspec.json.Decoder(BatchEvent).decode


def decode(data: bytes | str) -> BatchEvent:
    """A stored batch event."""
    return _decode(data)


def _company(state: Batch) -> str:
    return state.company_id


BATCHES: Decider[Batch, BatchCommand, BatchEvent] = Decider(
    category="batch",
    decode=decode,
    decide=decide,
    decide_many=one_at_a_time(decide),
    evolve=evolve,
    scope_of=_company,
)
"""The batch aggregate's decider record; its streams are `batch-<id>`."""
