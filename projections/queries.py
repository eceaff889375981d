"""Read queries over the projection tables, for the admin API and the schedulers; typed rows."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from projections.batches import COLUMNS as BATCH_COLUMNS
from projections.batches import BatchRow
from statemachine.states import BatchState, RequestState

Pool = Any  # an asyncpg Pool or Connection: both answer fetch/fetchrow
T = TypeVar("T")


class StatusCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Requests per status (the seed's summary shape)."""

    pending_batching: int = 0
    batching_in_progress: int = 0
    processing_complete: int = 0
    processing_failed: int = 0


class RequestItem(msgspec.Struct, frozen=True, kw_only=True):
    """A request as a list shows it."""

    request_id: str
    seq: int
    company_id: str
    session_id: str
    model: str
    status: RequestState
    batch_id: str | None
    attempts: int
    last_error_code: str | None
    last_error_message: str | None
    total_tokens: int
    cost_micro_usd: int
    queued_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class AnalysisView(msgspec.Struct, frozen=True, kw_only=True):
    """The analysis OpenAI returned for a completed request."""

    language: str
    sentiment: str
    escalated: bool
    forwarded_hr: bool
    category: str
    questions: list[str]
    summary: str
    analysed_at: datetime


class RequestView(RequestItem, frozen=True, kw_only=True):
    """One request in full: source, usage, and its analysis once completed."""

    source: str
    prompt_tokens: int
    completion_tokens: int
    analysis: AnalysisView | None = None


class PendingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request waiting for a batch, as the batch creator sees it; `seq` is its keyset."""

    request_id: str
    seq: int


_REQUEST_ITEM = ", ".join(RequestItem.__struct_fields__)
_ANALYSIS = ", ".join(
    f"a.{f}::text AS a_{f}" if f == "questions" else f"a.{f} AS a_{f}"
    for f in AnalysisView.__struct_fields__
)
_BATCH = ", ".join(BATCH_COLUMNS)


def _rows(records: list[Any], kind: type[T]) -> list[T]:
    return msgspec.convert([dict(r) for r in records], list[kind])  # type: ignore[valid-type]


Companies = frozenset[str] | None
"""The companies a reader may see; None: every company."""


def _company(company_id: str | None, companies: Companies) -> str | list[str] | None:
    """The company filter: the one asked for, else the reader's companies (None: all).

    A caller checks that `company_id` is among `companies` before asking.
    """
    if company_id is not None or companies is None:
        return company_id
    return next(iter(companies)) if len(companies) == 1 else sorted(companies)


async def summary(
    pool: Pool, company_id: str | None = None, *, companies: Companies = None
) -> StatusCounts:
    """Requests per status, every status present."""
    where, args = _where({"company_id": _company(company_id, companies)})
    rows = await pool.fetch(
        "SELECT status, sum(n)::bigint AS n FROM request_status_counts"
        f" WHERE {where} GROUP BY status",
        *args,
    )
    return StatusCounts(**{r["status"].lower(): int(r["n"]) for r in rows})


def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """A WHERE clause naming only the filters given.

    Optional filters written as `($n IS NULL OR col = $n)` get a generic plan that
    cannot use the keyset index; one statement per filter combination keeps it.
    """
    clauses, args = [], []
    for column, value in filters.items():
        if value is None:
            continue
        args.append(value)
        if isinstance(value, list):
            clauses.append(f"{column} = ANY(${len(args)}::text[])")
        else:
            op = ">" if column == "seq" else "="
            clauses.append(f"{column} {op} ${len(args)}")
    return " AND ".join(clauses) or "TRUE", args


async def requests_page(
    pool: Pool,
    status: RequestState,
    limit: int,
    *,
    after_seq: int | None = None,
    company_id: str | None = None,
    batch_id: str | None = None,
    companies: Companies = None,
) -> tuple[list[RequestItem], int | None]:
    """A keyset page of requests in one status, oldest first; and the seq to continue after."""
    filters = {
        "company_id": _company(company_id, companies),
        "batch_id": batch_id,
        "status": status.value,
        "seq": after_seq or 0,
    }
    where, args = _where(filters)
    records = await pool.fetch(
        f"SELECT {_REQUEST_ITEM} FROM requests WHERE {where} ORDER BY seq LIMIT ${len(args) + 1}",
        *args,
        limit + 1,
    )
    page = _rows(records[:limit], RequestItem)
    return page, (page[-1].seq if len(records) > limit else None)


async def request_detail(pool: Pool, request_id: str) -> RequestView | None:
    """One request with its analysis, usage and cost."""
    record = await pool.fetchrow(
        f"SELECT r.*, a.request_id IS NOT NULL AS analysed, {_ANALYSIS}"
        " FROM requests r LEFT JOIN session_analyses a USING (request_id) WHERE r.request_id = $1",
        request_id,
    )
    if record is None:
        return None
    row = {k: v for k, v in record.items() if not k.startswith("a_")}
    if row.pop("analysed"):
        found = {k.removeprefix("a_"): v for k, v in record.items() if k.startswith("a_")}
        found["questions"] = msgspec.json.decode(found["questions"])
        row["analysis"] = found
    return msgspec.convert(row, RequestView)


async def batches_page(
    pool: Pool,
    limit: int,
    *,
    status: BatchState | None = None,
    after_seq: int | None = None,
    companies: Companies = None,
) -> tuple[list[BatchRow], int | None]:
    """A keyset page of batches, oldest first."""
    where, args = _where(
        {
            "company_id": _company(None, companies),
            "status": status.value if status else None,
            "seq": after_seq or 0,
        }
    )
    records = await pool.fetch(
        f"SELECT {_BATCH} FROM batches WHERE {where} ORDER BY seq LIMIT ${len(args) + 1}",
        *args,
        limit + 1,
    )
    page = _rows(records[:limit], BatchRow)
    return page, (page[-1].seq if len(records) > limit else None)


async def batch_detail(pool: Pool, batch_id: str) -> BatchRow | None:
    """One batch."""
    record = await pool.fetchrow(f"SELECT {_BATCH} FROM batches WHERE batch_id = $1", batch_id)
    return msgspec.convert(dict(record), BatchRow) if record else None


async def pending_groups(pool: Pool) -> list[tuple[str, str]]:
    """The (company, model) pairs that have requests waiting for a batch, in order."""
    rows = await pool.fetch(
        "SELECT DISTINCT company_id, model FROM requests WHERE status = $1 ORDER BY 1, 2",
        RequestState.PENDING_BATCHING.value,
    )
    return [(r["company_id"], r["model"]) for r in rows]


async def pending_requests(
    pool: Pool, company_id: str, model: str, *, after_seq: int = 0, limit: int
) -> list[PendingRequest]:
    """A keyset page of one company's requests for one model waiting for a batch, oldest
    first: what the batch creator plans a page at a time.

    The index (company_id, status, seq) serves it; other models of the company are filtered.
    """
    records = await pool.fetch(
        "SELECT request_id, seq FROM requests"
        " WHERE company_id = $1 AND status = $2 AND seq > $3 AND model = $4"
        " ORDER BY seq LIMIT $5",
        company_id,
        RequestState.PENDING_BATCHING.value,
        after_seq,
        model,
        limit,
    )
    return _rows(records, PendingRequest)


async def batches_in(pool: Pool, states: Iterable[BatchState]) -> list[str]:
    """Ids of batches in any of `states`, oldest first."""
    rows = await pool.fetch(
        "SELECT batch_id FROM batches WHERE status = ANY($1::text[]) ORDER BY seq",
        sorted(s.value for s in states),
    )
    return [r[0] for r in rows]
