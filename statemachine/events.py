"""Domain events: frozen, past tense, each with an explicit tag that is never renamed.

New fields must get defaults so that events already stored still decode.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec


# gc=False: events hold only plain values, never cycles, so the collector can skip them
# (a batch decides 50,000 at once).
class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    """Base of every domain event; `stream` names the category of its stream."""

    stream: ClassVar[str]


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token usage of one completion, as OpenAI reports it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0


class RequestCounts(msgspec.Struct, frozen=True, kw_only=True):
    """OpenAI's request_counts of a batch."""

    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a failed batch's `errors.data`."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def describe(self) -> str:
        """The error as logs and views show it: where (line, param), code, message."""
        where = [f"line {self.line}"] if self.line is not None else []
        where += [self.param] if self.param else []
        prefix = f"{', '.join(where)}: " if where else ""
        return f"{prefix}{self.code}: {self.message}"


# -- request stream: request-<id> ---------------------------------------------------


class RequestQueued(Event, tag="RequestQueued", frozen=True):
    """An analysis request was accepted and waits to be batched."""

    stream = "request"
    request_id: str
    company_id: str
    session_id: str
    model: str
    transcript: str
    source: str = "import"


class RequestBatched(Event, tag="RequestBatched", frozen=True):
    """The request was assigned to a batch (recorded before anything is sent to OpenAI)."""

    stream = "request"
    request_id: str
    batch_id: str
    attempt: int


class RequestCompleted(Event, tag="RequestCompleted", frozen=True):
    """OpenAI answered the request and the analysis was valid."""

    stream = "request"
    request_id: str
    batch_id: str
    analysis: dict[str, object]
    usage: Usage
    cost_micro_usd: int
    openai_request_id: str | None = None


class RequestFailed(Event, tag="RequestFailed", frozen=True):
    """The request's attempt failed; `retryable` says whether another attempt may help."""

    stream = "request"
    request_id: str
    batch_id: str | None
    code: str
    message: str
    retryable: bool
    attempt: int


class RequestRequeued(Event, tag="RequestRequeued", frozen=True):
    """Back to waiting: a `retry`, a `not_at_fault` one (attempt given back), an `admin` requeue."""

    stream = "request"
    request_id: str
    # "retry" (an attempt used), "not_at_fault" (another line failed its batch: the attempt
    # is given back) or "admin" (attempts start over)
    reason: str


# -- batch stream: batch-<id> -------------------------------------------------------


class BatchPlanned(Event, tag="BatchPlanned", frozen=True):
    """A batch was formed from pending requests of one company and model (intent first)."""

    stream = "batch"
    batch_id: str
    company_id: str
    model: str
    request_ids: list[str]
    endpoint: str = "/v1/chat/completions"
    completion_window: str = "24h"


class BatchUploadStarted(Event, tag="BatchUploadStarted", frozen=True):
    """The input file upload is about to start; after a crash, look for `filename`."""

    stream = "batch"
    batch_id: str
    filename: str


class BatchFileUploaded(Event, tag="BatchFileUploaded", frozen=True):
    """OpenAI stored the input file."""

    stream = "batch"
    batch_id: str
    input_file_id: str
    bytes: int


class BatchSubmitted(Event, tag="BatchSubmitted", frozen=True):
    """OpenAI created the batch job."""

    stream = "batch"
    batch_id: str
    openai_batch_id: str
    input_file_id: str
    reconciled: bool = False  # found by its metadata after a crash, not created now


class BatchSubmissionFailed(Event, tag="BatchSubmissionFailed", frozen=True):
    """The upload or the batch creation was refused for good."""

    stream = "batch"
    batch_id: str
    code: str
    message: str


class BatchStatusObserved(Event, tag="BatchStatusObserved", frozen=True):
    """The poller saw a new OpenAI status or new request counts."""

    stream = "batch"
    batch_id: str
    openai_status: str
    request_counts: RequestCounts = msgspec.field(default_factory=RequestCounts)
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[BatchError] = msgspec.field(default_factory=list)


class BatchStatusUnrecognized(Event, tag="BatchStatusUnrecognized", frozen=True):
    """OpenAI reported a batch status our table does not know: kept raw, nothing moves."""

    stream = "batch"
    batch_id: str
    openai_status: str
    request_counts: RequestCounts = msgspec.field(default_factory=RequestCounts)


class BatchCancelRequested(Event, tag="BatchCancelRequested", frozen=True):
    """Someone decided to cancel the batch; OpenAI is asked after this is recorded."""

    stream = "batch"
    batch_id: str


class BatchOutputLineRejected(Event, tag="BatchOutputLineRejected", frozen=True):
    """An output or error line was recorded but not applied: unknown, duplicate or malformed."""

    stream = "batch"
    batch_id: str
    file_id: str
    line: int
    kind: str  # "unknown_custom_id" | "duplicate_custom_id" | "malformed"
    custom_id: str | None = None
    detail: str = ""


class BatchProcessed(Event, tag="BatchProcessed", frozen=True):
    """The output and error files were ingested; every request of the batch has an outcome."""

    stream = "batch"
    batch_id: str
    completed: int
    failed: int
    missing: int
    rejected_lines: int = 0


class BatchRequestsReleased(Event, tag="BatchRequestsReleased", frozen=True):
    """A failed batch sent its requests back to waiting or failed them."""

    stream = "batch"
    batch_id: str
    requeued: int
    failed: int


RequestEvent = RequestQueued | RequestBatched | RequestCompleted | RequestFailed | RequestRequeued
BatchEvent = (
    BatchPlanned
    | BatchUploadStarted
    | BatchFileUploaded
    | BatchSubmitted
    | BatchSubmissionFailed
    | BatchStatusObserved
    | BatchStatusUnrecognized
    | BatchCancelRequested
    | BatchOutputLineRejected
    | BatchProcessed
    | BatchRequestsReleased
)
DomainEvent = RequestEvent | BatchEvent


REQUEST_EVENTS: tuple[
    type[RequestQueued],
    type[RequestBatched],
    type[RequestCompleted],
    type[RequestFailed],
    type[RequestRequeued],
] = (RequestQueued, RequestBatched, RequestCompleted, RequestFailed, RequestRequeued)
"""The request events, for an `isinstance` that narrows a DomainEvent to a RequestEvent."""

BATCH_EVENTS: tuple[
    type[BatchPlanned],
    type[BatchUploadStarted],
    type[BatchFileUploaded],
    type[BatchSubmitted],
    type[BatchSubmissionFailed],
    type[BatchStatusObserved],
    type[BatchStatusUnrecognized],
    type[BatchCancelRequested],
    type[BatchOutputLineRejected],
    type[BatchProcessed],
    type[BatchRequestsReleased],
] = (
    BatchPlanned,
    BatchUploadStarted,
    BatchFileUploaded,
    BatchSubmitted,
    BatchSubmissionFailed,
    BatchStatusObserved,
    BatchStatusUnrecognized,
    BatchCancelRequested,
    BatchOutputLineRejected,
    BatchProcessed,
    BatchRequestsReleased,
)
"""The batch events, for an `isinstance` that narrows a DomainEvent to a BatchEvent."""

ALL_EVENTS: tuple[type[Event], ...] = REQUEST_EVENTS + BATCH_EVENTS


_decoder: msgspec.json.Decoder[DomainEvent] = msgspec.json.Decoder(DomainEvent)
_encoder = msgspec.json.Encoder()


def encode_event(event: Event) -> bytes:
    """JSON of an event, its tag included."""
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> DomainEvent:
    """The event a stored JSON body holds."""
    return _decoder.decode(data)


def tag_of(event_type: type[Event]) -> str:
    """The stable tag of an event class."""
    return str(event_type.__struct_config__.tag)
