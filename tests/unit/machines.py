"""Helpers to put aggregates in any state and to build the command that fires a trigger."""

from __future__ import annotations

from typing import Any

from statemachine.batch import Batch
from statemachine.commands import (
    AssignToBatch,
    CancelBatch,
    CompleteRequest,
    FailRequest,
    FailSubmission,
    FinishIngestion,
    ObserveStatus,
    RecordSubmission,
    RecordUpload,
    ReleaseRequests,
    RequeueRequest,
    StartUpload,
)
from statemachine.events import RequestCounts, Usage
from statemachine.openai_status import OPENAI_STATUS_TO_STATE
from statemachine.request import Request
from statemachine.states import BatchState, RequestState

STATUS_OF = {state: status for status, state in OPENAI_STATUS_TO_STATE.items()}


def request_in(state: RequestState, *, attempts: int = 1) -> Request:
    return Request(
        request_id="r1",
        company_id="acme",
        session_id="s1",
        model="gpt-4o-mini",
        state=state,
        attempts=attempts,
        batch_id="b1" if state is RequestState.BATCHING_IN_PROGRESS else None,
        version=3,
    )


def request_command(trigger: str, *, retryable: bool = True, max_attempts: int = 3) -> Any:
    return {
        "assign": AssignToBatch(batch_id="b2"),
        "complete": CompleteRequest(
            batch_id="b1",
            analysis={"sentiment": "POSITIVE"},
            usage=Usage(total_tokens=9),
            cost_micro_usd=5,
        ),
        "fail": FailRequest(
            batch_id="b1",
            code="expired",
            message="batch expired",
            retryable=retryable,
            max_attempts=max_attempts,
        ),
        "requeue": RequeueRequest(),
    }[trigger]


def batch_in(state: BatchState) -> Batch:
    return Batch(
        batch_id="b1",
        company_id="acme",
        model="gpt-4o-mini",
        request_ids=["r1", "r2"],
        state=state,
        input_file_id="file-1",
        openai_batch_id="batch_1",
        openai_status=STATUS_OF.get(state),
        version=4,
    )


def batch_command(trigger: str, state: BatchState) -> Any:
    if trigger.startswith("mark_") and trigger != "mark_processed":
        target = BatchState[trigger.removeprefix("mark_").upper()]
        return ObserveStatus(
            openai_status=STATUS_OF[target], request_counts=RequestCounts(total=2, completed=1)
        )
    if trigger == "observe_progress":
        status = STATUS_OF.get(state, "validating")
        return ObserveStatus(
            openai_status=status, request_counts=RequestCounts(total=2, completed=2)
        )
    return {
        "begin_upload": StartUpload(filename="batchledger-b1.jsonl"),
        "record_upload": RecordUpload(input_file_id="file-1", bytes=100),
        "submit": RecordSubmission(openai_batch_id="batch_1", input_file_id="file-1"),
        "fail_submission": FailSubmission(code="invalid_request", message="refused"),
        "cancel": CancelBatch(),
        "mark_processed": FinishIngestion(completed=1, failed=1, missing=0),
        "release_requests": ReleaseRequests(requeued=2, failed=0),
    }[trigger]
