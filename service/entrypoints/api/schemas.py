"""Typed shapes of the admin API: query strings, bodies and responses (JSON keys in camelCase)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from service.feed import EventItem

Id = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@\-]+$(?![\s\S])")
]
TokenName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@\-]*$(?![\s\S])",
        description="The id rule, starting with a letter or a digit.",
    ),
]
NO_NUL = "^[^\\x00]*$"  # PostgreSQL text and jsonb cannot hold a NUL character
# Patterns end in `$(?![\s\S])`, the very end: msgspec checks them with Python's
# re.search, where `$` alone also matches before a final newline ("acme\n" would pass as
# an id); in the document's JSON Schema (ECMA regex) the lookahead means the same.
_DAY = (
    r"(?:20[0-9]{2}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|20(?:0[048]|[2468][048]|[13579][26])-02-29)"
)
AT_PATTERN = (
    rf"^{_DAY}[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?$"
)
"""A message time as the decoder reads it (RFC 3339), on a real day of a 20xx year."""
Limit500 = Annotated[int, msgspec.Meta(ge=1, le=500)]
Limit1000 = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Cursor = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
REQUEST_STATUSES = (
    "pending_batching",
    "batching_in_progress",
    "processing_complete",
    "processing_failed",
)
BATCH_STATUSES = (
    "pending",
    "uploading",
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "processed",
    "failed",
    "cancelled",
    "cancelling",
    "expired",
)


def any_case(values: tuple[str, ...]) -> str:
    """A pattern, the same in Python and ECMA regex, for any of `values` in any ASCII case."""
    words = ("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in v) for v in values)
    return f"^(?:{'|'.join(words)})$(?![\\s\\S])"


def enum_value(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """`value` as the member of `allowed` it names in any case (`PROCESSING_FAILED`, the
    seed's spelling, is `processing_failed`); else a ValueError listing the members."""
    lowered = value.lower()
    if value.isascii() and lowered in allowed:  # non-ASCII: the Kelvin sign lowers to "k"
        return lowered
    raise ValueError(f"{name} must be one of {', '.join(allowed)} (in any case), not {value!r}")


RequestStatusFilter = Annotated[
    str,
    msgspec.Meta(
        description=f"One of {', '.join(REQUEST_STATUSES)}, in any case"
        " (`PROCESSING_FAILED`, the seed's spelling, is `processing_failed`).",
        extra_json_schema={"pattern": any_case(REQUEST_STATUSES)},
    ),
]
BatchStatusFilter = Annotated[
    str,
    msgspec.Meta(
        description=f"One of {', '.join(BATCH_STATUSES)}, in any case.",
        extra_json_schema={"pattern": any_case(BATCH_STATUSES)},
    ),
]


class Query(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """Base of query-string shapes: unknown parameters are refused; `enums` names the
    parameters read in any case, and their members."""

    enums: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __post_init__(self) -> None:
        # The one place where enum parameters are normalised: handlers see lower case.
        for name, allowed in self.enums.items():
            if (value := getattr(self, name)) is not None:
                setattr(self, name, enum_value(name, value, allowed))


class SummaryQuery(Query):
    """GET /summary."""

    company_id: Id | None = None


class RequestsQuery(Query):
    """GET /requests."""

    enums = {"status": REQUEST_STATUSES}
    status: RequestStatusFilter
    limit: Limit500 = 50
    cursor: Cursor | None = None
    company_id: Id | None = None
    batch_id: Id | None = None


class BatchesQuery(Query):
    """GET /batches."""

    enums = {"status": BATCH_STATUSES}
    status: BatchStatusFilter | None = None
    limit: Limit500 = 50
    cursor: Cursor | None = None


class EventsQuery(Query):
    """GET /events and /events/stream."""

    after: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=10**18 - 1,  # the edge reads at most 18 ASCII digits (io.ASCII_NUMBER)
            description="An event position, as `nextAfter` or an event's `position` gave it:"
            " the page starts after it. A position past the newest event is a 400.",
        ),
    ] = 0
    limit: Limit1000 = 100
    type: (
        Annotated[str, msgspec.Meta(max_length=1000, pattern=r"^[A-Za-z0-9,]+$(?![\s\S])")] | None
    ) = None
    category: (
        Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[a-z0-9,]+$(?![\s\S])")] | None
    ) = None


class NoQuery(Query):
    """Routes that take no query parameters."""


class RequeueBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """POST /requests/requeue."""

    request_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=1000)]


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    """One message of a session submitted directly; the rules beyond these types are
    `service.transcripts.to_message` (a 400 `invalid_body` naming the message)."""

    role: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=40,
            pattern=r"^[^:\n\x00]+$(?![\s\S])",
            description="No ':', no space at either end, no control, line-break or"
            " invisible character.",
        ),
    ]
    content: Annotated[
        str,
        msgspec.Meta(
            max_length=20_000,
            pattern=NO_NUL,
            description="No line may read as a transcript turn header"
            " `[DD.MM.YYYY HH:MM:SS] Role:` (refused, not escaped). CRLF is stored as LF;"
            " blanks at line ends and trailing blank lines are dropped.",
        ),
    ]
    at: (
        Annotated[
            datetime,
            msgspec.Meta(
                description="Converted to UTC (no offset: taken as UTC), whole seconds;"
                " from 2000-01-01T00:00:00Z to one day from now. Absent: now.",
                # Documents what the decoder reads (`format` alone asserts nothing in
                # JSON Schema 2020-12): an RFC 3339 time of a real day of a 20xx year.
                extra_json_schema={"format": "date-time", "pattern": AT_PATTERN},
            ),
        ]
        | None
    ) = None


class EnqueueBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """POST /requests: a transcript in the LiveDash format, or messages."""

    company_id: Id
    session_id: Id
    transcript: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=500_000,
                pattern=NO_NUL,
                description="The LiveDash format: one `[DD.MM.YYYY HH:MM:SS] Role: text` header"
                " per turn, a line without a header continuing the turn before it; no text"
                " before the first header, real times from 2000-01-01 to one day from now"
                " (taken as written, without a zone). Else a 400 `invalid_transcript`.",
            ),
        ]
        | None
    ) = None
    messages: Annotated[list[MessageIn], msgspec.Meta(min_length=1, max_length=1000)] | None = None
    model: (
        Annotated[
            str,
            msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:\-]+$(?![\s\S])"),
        ]
        | None
    ) = None


class TokenBody(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """POST /tokens: `companies` limits the token (absent: every company, which only a
    superadmin limited to no company may grant); `expiresIn` like 90d, 12h, 30m."""

    name: TokenName
    role: Literal["support", "admin", "superadmin"]
    companies: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=100)] | None = None
    expires_in: (
        Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,5}[smhd]$(?![\s\S])", max_length=7)]
        | None
    ) = None


class Response(msgspec.Struct, rename="camel"):
    """Base of success bodies."""

    ok: bool = True


class Summary(msgspec.Struct):
    """Requests per status; every key always present (the seed's shape)."""

    pending_batching: int
    batching_in_progress: int
    processing_complete: int
    processing_failed: int


class SummaryResponse(Response):
    """GET /summary."""

    summary: Summary = msgspec.field(default_factory=lambda: Summary(0, 0, 0, 0))


class ErrorInfo(msgspec.Struct):
    """The last error of a request."""

    code: str
    message: str | None


class RequestItem(msgspec.Struct, rename="camel"):
    """A request in a list."""

    id: str
    session_id: str
    company_id: str
    model: str
    status: str
    batch_id: str | None
    attempts: int
    last_error: ErrorInfo | None
    total_tokens: int
    cost_micro_usd: int
    queued_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class RequestsResponse(Response):
    """GET /requests."""

    requests: list[RequestItem] = msgspec.field(default_factory=list)
    next_cursor: str | None = None


class Analysis(msgspec.Struct, rename="camel"):
    """The stored analysis of a session."""

    language: str
    sentiment: str
    escalated: bool
    forwarded_hr: bool
    category: str
    questions: list[str]
    summary: str
    analysed_at: datetime


class UsageOut(msgspec.Struct, rename="camel"):
    """Tokens a request used."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class RequestDetail(RequestItem):
    """One request with its analysis, usage and cost."""

    source: str
    usage: UsageOut
    analysis: Analysis | None


class RequestResponse(Response):
    """GET /requests/{id}."""

    request: RequestDetail | None = None


class HistoryEntry(msgspec.Struct, rename="camel"):
    """One event of a stream: the audit trail."""

    position: int
    version: int
    type: str
    occurred_at: datetime
    actor: str
    correlation_id: str | None
    data: msgspec.Raw


class HistoryResponse(Response):
    """GET /requests/{id}/history and /batches/{id}/history."""

    id: str = ""
    history: list[HistoryEntry] = msgspec.field(default_factory=list)


class RequeueResponse(Response):
    """POST /requests/requeue (the seed's keys plus skippedCount)."""

    requeued_count: int = 0
    not_found_count: int = 0
    skipped_count: int = 0


class EnqueueResponse(Response):
    """POST /requests."""

    request_id: str = ""
    created: bool = False


class Counts(msgspec.Struct):
    """OpenAI's request counts."""

    total: int
    completed: int
    failed: int


class Outcome(msgspec.Struct, rename="camel"):
    """What ingestion found."""

    completed: int
    failed: int
    missing: int
    rejected_lines: int


class BatchItem(msgspec.Struct, rename="camel"):
    """A batch with its OpenAI ids, status, counts and timeline."""

    id: str
    company_id: str
    model: str
    status: str
    request_count: int
    openai_batch_id: str | None
    openai_status: str | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    request_counts: Counts
    outcome: Outcome
    last_error: str | None
    planned_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    processed_at: datetime | None
    updated_at: datetime


class BatchesResponse(Response):
    """GET /batches."""

    batches: list[BatchItem] = msgspec.field(default_factory=list)
    next_cursor: str | None = None


class BatchResponse(Response):
    """GET /batches/{id}."""

    batch: BatchItem | None = None


class CancelResponse(Response):
    """POST /batches/{id}/cancel."""

    batch_id: str = ""
    status: str = "cancelling"
    # sent: OpenAI took it; deferred: OpenAI did not answer, the poller sends it again;
    # refused: OpenAI refused (it had already ended there), the poller records how it ended.
    openai_cancel: Literal["sent", "deferred", "refused"] = "sent"


class EventsResponse(Response):
    """GET /events."""

    events: list[EventItem] = msgspec.field(default_factory=list)
    next_after: int = 0


class TokenItem(msgspec.Struct, rename="camel", kw_only=True):
    """A token as listed: never its secret or hash; `companies` null means every company;
    `tokenId` is the public part of the token (`bl_<tokenId>_…`), as the auth logs show it."""

    token_id: str
    name: str
    role: str
    companies: list[str] | None = None
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None


class TokensResponse(Response):
    """GET /tokens."""

    tokens: list[TokenItem] = msgspec.field(default_factory=list)


class TokenCreatedResponse(Response):
    """POST /tokens: the token itself, shown this once."""

    name: str = ""
    role: str = ""
    token: str = ""
    companies: list[str] | None = None
    expires_at: datetime | None = None


class TokenRevokedResponse(Response):
    """POST /tokens/{id}/revoke."""

    name: str = ""
    revoked: bool = True


class ErrorBody(msgspec.Struct):
    """code and message of an error."""

    code: str
    message: str


class ErrorResponse(msgspec.Struct):
    """Every error: ok false, with a code and a message."""

    error: ErrorBody
    ok: bool = False


class Health(msgspec.Struct):
    """GET /healthz and /readyz."""

    ok: bool
    checks: dict[str, str] = msgspec.field(default_factory=dict)
