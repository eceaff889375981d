"""Commands: imperative, each naming the trigger it fires (creation commands fire none)."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from statemachine.events import BatchError, RequestCounts, Usage


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every command."""

    trigger: ClassVar[str]


# -- requests -------------------------------------------------------------------------


class QueueRequest(Command, frozen=True):
    """Accept a new analysis request."""

    trigger = "queue"
    request_id: str
    company_id: str
    session_id: str
    model: str
    transcript: str
    source: str = "import"


class AssignToBatch(Command, frozen=True):
    """Put a waiting request into a batch."""

    trigger = "assign"
    batch_id: str


class CompleteRequest(Command, frozen=True):
    """Record the valid analysis OpenAI returned for the request."""

    trigger = "complete"
    batch_id: str
    analysis: dict[str, object]
    usage: Usage
    cost_micro_usd: int
    openai_request_id: str | None = None


class FailRequest(Command, frozen=True):
    """Record a failed attempt; retried while retryable and attempts remain."""

    trigger = "fail"
    batch_id: str | None
    code: str
    message: str
    retryable: bool
    max_attempts: int
    # False when the failure was not the request's own (another line failed its batch):
    # it is retried without using one of its attempts.
    charged: bool = True


class RequeueRequest(Command, frozen=True):
    """Send a failed request back to waiting (an admin's decision; resets its attempts)."""

    trigger = "requeue"


# -- batches --------------------------------------------------------------------------


class PlanBatch(Command, frozen=True):
    """Form a batch from waiting requests of one company and model."""

    trigger = "plan"
    batch_id: str
    company_id: str
    model: str
    request_ids: list[str]


class StartUpload(Command, frozen=True):
    """Record that the input file upload is about to start."""

    trigger = "begin_upload"
    filename: str


class RecordUpload(Command, frozen=True):
    """Record the input file OpenAI stored."""

    trigger = "record_upload"
    input_file_id: str
    bytes: int


class RecordSubmission(Command, frozen=True):
    """Record the OpenAI batch created (or found again after a crash) for this batch."""

    trigger = "submit"
    openai_batch_id: str
    input_file_id: str
    reconciled: bool = False


class FailSubmission(Command, frozen=True):
    """Record that OpenAI refused the upload or the batch for good."""

    trigger = "fail_submission"
    code: str
    message: str


class ObserveStatus(Command, frozen=True):
    """Record what the poller saw; the trigger follows from the OpenAI status."""

    trigger = "observe"
    openai_status: str
    request_counts: RequestCounts = msgspec.field(default_factory=RequestCounts)
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[BatchError] = msgspec.field(default_factory=list)


class CancelBatch(Command, frozen=True):
    """Ask OpenAI to cancel the batch."""

    trigger = "cancel"


class RejectedLine(msgspec.Struct, frozen=True, kw_only=True):
    """An output line that was recorded but not applied."""

    file_id: str
    line: int
    kind: str
    custom_id: str | None = None
    detail: str = ""


class FinishIngestion(Command, frozen=True):
    """Close a completed, expired or cancelled batch once every request has an outcome."""

    trigger = "mark_processed"
    completed: int
    failed: int
    missing: int
    rejected: list[RejectedLine] = msgspec.field(default_factory=list)


class ReleaseRequests(Command, frozen=True):
    """Close a failed batch once its requests were sent back or failed."""

    trigger = "release_requests"
    requeued: int
    failed: int
