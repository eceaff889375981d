"""The Batch aggregate: its machine, state, decide and evolve."""

from __future__ import annotations

from collections.abc import Sequence

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
from statemachine.errors import AlreadyExists, NotFound
from statemachine.events import (
    BatchCancelRequested,
    BatchEvent,
    BatchFileUploaded,
    BatchOutputLineRejected,
    BatchPlanned,
    BatchProcessed,
    BatchRequestsReleased,
    BatchStatusObserved,
    BatchSubmissionFailed,
    BatchSubmitted,
    BatchUploadStarted,
    RequestCounts,
)
from statemachine.machine import Declaration
from statemachine.openai_status import STATE_TO_TRIGGER, state_for
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
    """A batch as its events left it; `version` is its stream version."""

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
    version: int = 0


def stream_id(batch_id: str) -> str:
    """The stream of a batch."""
    return f"batch-{batch_id}"


_ACTIVE = [BS.VALIDATING, BS.IN_PROGRESS, BS.FINALIZING]
_IN_FLIGHT = [*_ACTIVE, BS.CANCELLING]


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


def observe_trigger(b: Batch, c: ObserveStatus) -> str | None:
    """The trigger an observation fires, or None when it shows nothing new."""
    target = state_for(c.openai_status)
    changed = (c.openai_status, c.request_counts, c.output_file_id, c.error_file_id) != (
        b.openai_status,
        b.request_counts,
        b.output_file_id,
        b.error_file_id,
    )
    if target is b.state:
        return "observe_progress" if changed else None
    # While our cancel is pending, OpenAI may still report the batch as running.
    if b.state is BS.CANCELLING and target in _ACTIVE and not changed:
        return None
    return STATE_TO_TRIGGER[target]


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
        found = observe_trigger(state, command)
        if found is None:
            return []
        trigger = found
    BATCH_MACHINE.route(state.batch_id, state.state, trigger, state, command)
    return _emit(state.batch_id, command)


def _emit(bid: str, c: BatchCommand) -> list[BatchEvent]:
    if isinstance(c, StartUpload):
        return [BatchUploadStarted(batch_id=bid, filename=c.filename)]
    if isinstance(c, RecordUpload):
        return [BatchFileUploaded(batch_id=bid, input_file_id=c.input_file_id, bytes=c.bytes)]
    if isinstance(c, RecordSubmission):
        return [
            BatchSubmitted(
                batch_id=bid,
                openai_batch_id=c.openai_batch_id,
                input_file_id=c.input_file_id,
                reconciled=c.reconciled,
            )
        ]
    if isinstance(c, FailSubmission):
        return [BatchSubmissionFailed(batch_id=bid, code=c.code, message=c.message)]
    if isinstance(c, ObserveStatus):
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
    if isinstance(c, CancelBatch):
        return [BatchCancelRequested(batch_id=bid)]
    if isinstance(c, FinishIngestion):
        rejected: list[BatchEvent] = [
            BatchOutputLineRejected(batch_id=bid, **msgspec.structs.asdict(r)) for r in c.rejected
        ]
        done = BatchProcessed(
            batch_id=bid,
            completed=c.completed,
            failed=c.failed,
            missing=c.missing,
            rejected_lines=len(c.rejected),
        )
        return [*rejected, done]
    assert isinstance(c, ReleaseRequests)
    return [BatchRequestsReleased(batch_id=bid, requeued=c.requeued, failed=c.failed)]


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
    replace, v = msgspec.structs.replace, state.version + 1
    if isinstance(event, BatchUploadStarted):
        return replace(state, state=BS.UPLOADING, upload_filename=event.filename, version=v)
    if isinstance(event, BatchFileUploaded):
        return replace(state, input_file_id=event.input_file_id, version=v)
    if isinstance(event, BatchSubmitted):
        return replace(
            state,
            state=BS.VALIDATING,
            openai_batch_id=event.openai_batch_id,
            input_file_id=event.input_file_id,
            openai_status="validating",
            version=v,
        )
    if isinstance(event, BatchSubmissionFailed):
        return replace(
            state,
            state=BS.FAILED,
            failure_code=event.code,
            failure_message=event.message,
            version=v,
        )
    if isinstance(event, BatchStatusObserved):
        return _observed(state, event, v)
    if isinstance(event, BatchCancelRequested):
        return replace(state, state=BS.CANCELLING, version=v)
    if isinstance(event, BatchProcessed):
        return replace(state, state=BS.PROCESSED, version=v)
    if isinstance(event, BatchRequestsReleased):
        return replace(state, released=True, version=v)
    return replace(state, version=v)  # BatchOutputLineRejected: recorded, no state change


def _observed(state: Batch, event: BatchStatusObserved, version: int) -> Batch:
    target = state_for(event.openai_status)
    if state.state is BS.CANCELLING and target in _ACTIVE:
        target = BS.CANCELLING
    first = event.errors[0] if event.errors else None
    return msgspec.structs.replace(
        state,
        state=target,
        failure_code=first.code if first else state.failure_code,
        failure_message=first.message if first else state.failure_message,
        openai_status=event.openai_status,
        request_counts=event.request_counts,
        output_file_id=event.output_file_id,
        error_file_id=event.error_file_id,
        version=version,
    )


def fold(events: Sequence[BatchEvent]) -> Batch | None:
    """The batch its events describe (None for no events)."""
    state: Batch | None = None
    for event in events:
        state = evolve(state, event)
    return state
