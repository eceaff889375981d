"""Read queries of the admin console's overview and batches pages; typed rows.

Every query takes `companies` (None: every company) and reads only their rows. The
overview's queries are all indexed or read small tables, so the page stays fast with
millions of requests stored:

* requests per status: the `request_status_counts` counters (one row per company and
  status), never a count over `requests`;
* batches in flight: `batches_status_seq_idx`;
* cost and requests finished per hour: `request_hours`, kept by the requests projection
  (`0002_console_indexes.sql`);
* projection lag: `projection_checkpoints` and the log's head (an index probe).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from eventstore import EventLog, RecordedEvent
from projections.batches import COLUMNS as BATCH_COLUMNS
from projections.queries import RequestItem, StatusCounts
from projections.registry import all_projections
from statemachine.batch import BATCHES
from statemachine.states import IN_FLIGHT, BatchState, RequestState

Pool = Any  # an asyncpg Pool or Connection: both answer fetch/fetchrow/fetchval
Companies = frozenset[str] | None
"""The companies a reader may see; None: every company."""

COMPLETE = RequestState.PROCESSING_COMPLETE.value


class CompanyCounts(msgspec.Struct, frozen=True, kw_only=True):
    """One company's requests per status."""

    company_id: str
    counts: StatusCounts


class StatusOverview(msgspec.Struct, frozen=True, kw_only=True):
    """Requests per status in total and per company (companies in name order)."""

    total: StatusCounts
    companies: list[CompanyCounts]


class InFlightBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A batch OpenAI is working on (or cancelling), as the overview lists it."""

    batch_id: str
    company_id: str
    model: str
    status: BatchState
    openai_status: str | None
    request_count: int
    planned_at: datetime
    submitted_at: datetime | None


class InFlight(msgspec.Struct, frozen=True, kw_only=True):
    """The oldest batches in flight (at most the limit asked for) and how many there are."""

    batches: list[InFlightBatch]
    total: int


class Costs(msgspec.Struct, frozen=True, kw_only=True):
    """Cost of the requests completed since the start of today (UTC) and in the last 7 and
    30 days, in micro-USD."""

    today: int
    week: int
    month: int


class HourBucket(msgspec.Struct, frozen=True, kw_only=True):
    """Requests finished in one hour (UTC): completed (by `completed_at`) and failed (by
    the time of their last change)."""

    hour: datetime
    completed: int
    failed: int

    @property
    def total(self) -> int:
        return self.completed + self.failed


class ProjectionLag(msgspec.Struct, frozen=True, kw_only=True):
    """A projection's checkpoint and how many events of the log it has not applied yet."""

    name: str
    checkpoint: int
    lag: int
    updated_at: datetime | None


class BatchListItem(msgspec.Struct, frozen=True, kw_only=True):
    """A batch as the batches list shows it; `cost_micro_usd` is its completed requests'."""

    batch_id: str
    seq: int
    company_id: str
    model: str
    status: BatchState
    openai_status: str | None
    request_count: int
    counts_total: int
    counts_completed: int
    counts_failed: int
    completed: int
    failed: int
    cost_micro_usd: int
    planned_at: datetime
    updated_at: datetime


class BatchDetail(msgspec.Struct, frozen=True, kw_only=True):
    """One batch in full, with its completed requests' cost."""

    batch_id: str
    seq: int
    company_id: str
    model: str
    status: BatchState
    request_count: int
    openai_batch_id: str | None
    openai_status: str | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    counts_total: int
    counts_completed: int
    counts_failed: int
    completed: int
    failed: int
    missing: int
    rejected_lines: int
    last_error: str | None
    planned_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    processed_at: datetime | None
    updated_at: datetime
    cost_micro_usd: int


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a stream, as the API's history shows it (without its data)."""

    position: int
    version: int
    type: str
    occurred_at: datetime
    actor: str
    correlation_id: str | None


def _scope(companies: Companies) -> list[str] | None:
    return None if companies is None else sorted(companies)


def _convert(records: Sequence[Any], kind: type[Any]) -> list[Any]:
    return [msgspec.convert(dict(r), kind) for r in records]


# -- overview


async def status_overview(pool: Pool, *, companies: Companies) -> StatusOverview:
    """Requests per status, in total and per company, from the counters table."""
    scope = _scope(companies)
    if scope is None:
        rows = await pool.fetch(
            "SELECT company_id, status, n FROM request_status_counts ORDER BY company_id"
        )
    else:
        rows = await pool.fetch(
            "SELECT company_id, status, n FROM request_status_counts"
            " WHERE company_id = ANY($1::text[]) ORDER BY company_id",
            scope,
        )
    per: dict[str, dict[str, int]] = {}
    total: dict[str, int] = {}
    for r in rows:
        key = str(r["status"]).lower()
        if key not in StatusCounts.__struct_fields__:
            continue  # a status the seed's summary does not name
        n = int(r["n"])
        per.setdefault(r["company_id"], {})[key] = n
        total[key] = total.get(key, 0) + n
    return StatusOverview(
        total=StatusCounts(**total),
        companies=[
            CompanyCounts(company_id=c, counts=StatusCounts(**counts))
            for c, counts in per.items()
            if any(counts.values())
        ],
    )


_IN_FLIGHT_COLUMNS = ", ".join(InFlightBatch.__struct_fields__)


async def batches_in_flight(pool: Pool, limit: int, *, companies: Companies) -> InFlight:
    """The oldest `limit` batches in flight and how many there are (batches_status_seq_idx)."""
    states = sorted(s.value for s in IN_FLIGHT)
    scope = _scope(companies)
    where = "status = ANY($1::text[])"
    args: list[Any] = [states]
    if scope is not None:
        where += " AND company_id = ANY($2::text[])"
        args.append(scope)
    records = await pool.fetch(
        f"SELECT {_IN_FLIGHT_COLUMNS}, count(*) OVER () AS total FROM batches"
        f" WHERE {where} ORDER BY seq LIMIT ${len(args) + 1}",
        *args,
        limit,
    )
    total = int(records[0]["total"]) if records else 0
    rows = [{k: v for k, v in r.items() if k != "total"} for r in records]
    return InFlight(batches=_convert(rows, InFlightBatch), total=total)


async def costs(pool: Pool, now: datetime, *, companies: Companies) -> Costs:
    """Cost of completed requests today (since 00:00 UTC), in the last 7 and 30 days (whole
    hours: the window starts at the hour it falls in), from `request_hours`."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    week, month = _hour(now - timedelta(days=7)), _hour(now - timedelta(days=30))
    scope = _scope(companies)
    sql = (
        "SELECT coalesce(sum(cost_micro_usd) FILTER (WHERE hour >= $1), 0)::bigint,"
        " coalesce(sum(cost_micro_usd) FILTER (WHERE hour >= $2), 0)::bigint,"
        " coalesce(sum(cost_micro_usd), 0)::bigint"
        " FROM request_hours WHERE hour >= $3"
    )
    args: list[Any] = [today, week, month]
    if scope is not None:
        sql += " AND company_id = ANY($4::text[])"
        args.append(scope)
    row = await pool.fetchrow(sql, *args)
    return Costs(today=int(row[0]), week=int(row[1]), month=int(row[2]))


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


async def finished_per_hour(
    pool: Pool, now: datetime, *, hours: int = 24, companies: Companies
) -> list[HourBucket]:
    """Requests finished in each of the last `hours` hours (UTC, the current one last),
    every hour present, from `request_hours`."""
    start = _hour(now) - timedelta(hours=hours - 1)
    scope = _scope(companies)
    company = " AND company_id = ANY($2::text[])" if scope is not None else ""
    sql = (
        "SELECT hour, sum(completed)::bigint AS completed, sum(failed)::bigint AS failed"
        f" FROM request_hours WHERE hour >= $1{company} GROUP BY hour"
    )
    args: list[Any] = [start]
    if scope is not None:
        args.append(scope)
    rows = await pool.fetch(sql, *args)
    found = {r["hour"]: r for r in rows}
    out = []
    for i in range(hours):
        hour = start + timedelta(hours=i)
        r = found.get(hour)
        out.append(
            HourBucket(
                hour=hour,
                completed=int(r["completed"]) if r else 0,
                failed=int(r["failed"]) if r else 0,
            )
        )
    return out


async def projection_lag(pool: Pool) -> tuple[int, list[ProjectionLag]]:
    """The log's head and each projection's checkpoint and lag behind it (as /metrics and
    `batchledger projections status` compute it). Every company's: not for scoped readers."""
    head = int(await pool.fetchval("SELECT coalesce(max(position), 0) FROM events"))
    rows = await pool.fetch("SELECT name, position, updated_at FROM projection_checkpoints")
    found = {r["name"]: r for r in rows}
    out = []
    for name in all_projections():
        r = found.get(name)
        position = int(r["position"]) if r else 0
        out.append(
            ProjectionLag(
                name=name,
                checkpoint=position,
                lag=max(head - position, 0),
                updated_at=r["updated_at"] if r else None,
            )
        )
    return head, out


# -- batches


async def batch_companies(pool: Pool, *, companies: Companies) -> list[str]:
    """The companies that have requests (the batches filter's choices), in name order."""
    rows = await pool.fetch("SELECT DISTINCT company_id FROM request_status_counts ORDER BY 1")
    return [r[0] for r in rows if companies is None or r[0] in companies]


_BATCH_COST = (
    "(SELECT coalesce(sum(r.cost_micro_usd), 0)::bigint FROM requests r"
    f" WHERE r.batch_id = b.batch_id AND r.status = '{COMPLETE}')"
)
_LIST_COLUMNS = ", ".join(
    f"b.{f}" for f in BatchListItem.__struct_fields__ if f != "cost_micro_usd"
)


async def batches_newest(
    pool: Pool,
    limit: int,
    *,
    status: BatchState | None = None,
    company_id: str | None = None,
    before_seq: int | None = None,
    companies: Companies,
) -> tuple[list[BatchListItem], int | None]:
    """A keyset page of batches, newest first, and the seq to continue before (None: the
    last page). A `company_id` outside `companies` reads nothing."""
    if company_id is not None and companies is not None and company_id not in companies:
        return [], None
    clauses: list[str] = []
    args: list[Any] = []
    if status is not None:
        args.append(status.value)
        clauses.append(f"b.status = ${len(args)}")
    if company_id is not None:
        args.append(company_id)
        clauses.append(f"b.company_id = ${len(args)}")
    elif companies is not None:
        args.append(sorted(companies))
        clauses.append(f"b.company_id = ANY(${len(args)}::text[])")
    if before_seq is not None:
        args.append(before_seq)
        clauses.append(f"b.seq < ${len(args)}")
    where = " AND ".join(clauses) or "TRUE"
    records = await pool.fetch(
        f"SELECT {_LIST_COLUMNS}, {_BATCH_COST} AS cost_micro_usd FROM batches b"
        f" WHERE {where} ORDER BY b.seq DESC LIMIT ${len(args) + 1}",
        *args,
        limit + 1,
    )
    page: list[BatchListItem] = _convert(records[:limit], BatchListItem)
    return page, (page[-1].seq if len(records) > limit else None)


_DETAIL_COLUMNS = ", ".join(f"b.{f}" for f in BatchDetail.__struct_fields__ if f in BATCH_COLUMNS)


async def batch_detail(pool: Pool, batch_id: str, *, companies: Companies) -> BatchDetail | None:
    """One batch with its cost; None when there is none or it is another company's."""
    record = await pool.fetchrow(
        f"SELECT {_DETAIL_COLUMNS}, {_BATCH_COST} AS cost_micro_usd FROM batches b"
        " WHERE b.batch_id = $1",
        batch_id,
    )
    if record is None or (companies is not None and record["company_id"] not in companies):
        return None
    detail: BatchDetail = msgspec.convert(dict(record), BatchDetail)
    return detail


_REQUEST_COLUMNS = ", ".join(RequestItem.__struct_fields__)


async def batch_requests(
    pool: Pool, batch_id: str, limit: int, *, companies: Companies
) -> list[RequestItem]:
    """The first `limit` requests of a batch, oldest first (requests_batch_seq_idx)."""
    scope = _scope(companies)
    sql = f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE batch_id = $1"
    args: list[Any] = [batch_id]
    if scope is not None:
        sql += " AND company_id = ANY($2::text[])"
        args.append(scope)
    records = await pool.fetch(f"{sql} ORDER BY seq LIMIT ${len(args) + 1}", *args, limit)
    rows: list[RequestItem] = _convert(records, RequestItem)
    return rows


async def batch_timeline(
    store: EventLog, batch_id: str, *, companies: Companies
) -> list[TimelineEntry] | None:
    """Every event of the batch's stream in order, as the API's batch history reads it;
    None when there is no such stream or it is another company's."""
    stream = BATCHES.stream_id(batch_id)
    first = await store.read_stream(stream, limit=1)
    if not first or (companies is not None and first[0].scope not in companies):
        return None
    events = first + await store.read_stream(stream, after_version=1)
    return [_entry(e) for e in events]


def _entry(e: RecordedEvent) -> TimelineEntry:
    m = e.metadata
    return TimelineEntry(
        position=e.position,
        version=e.version,
        type=e.type,
        occurred_at=m.occurred_at,
        actor=m.actor,
        correlation_id=m.correlation_id,
    )


async def wait_projected(pool: Pool, name: str, position: int) -> None:
    """Return once projection `name` has applied the log up to `position`, so a page shown
    after a write reads it; callers bound the wait with `asyncio.timeout`."""
    while True:
        done = await pool.fetchval(
            "SELECT position FROM projection_checkpoints WHERE name = $1", name
        )
        if done is not None and int(done) >= position:
            return
        await asyncio.sleep(0.05)


async def openai_batch_ids(pool: Pool, batch_ids: Sequence[str]) -> dict[str, str]:
    """The OpenAI batch id of each of `batch_ids` that was submitted (by batch id)."""
    if not batch_ids:
        return {}
    rows = await pool.fetch(
        "SELECT batch_id, openai_batch_id FROM batches"
        " WHERE batch_id = ANY($1::text[]) AND openai_batch_id IS NOT NULL",
        sorted(set(batch_ids)),
    )
    return {r["batch_id"]: r["openai_batch_id"] for r in rows}


async def find_batch(pool: Pool, text: str, *, companies: Companies) -> str | None:
    """The id of a batch the reader sees whose id or OpenAI batch id is `text`."""
    # The primary key, then the unique index on openai_batch_id; each branch keeps only
    # visible batches before LIMIT, so another company's batch with that id as its batch
    # id cannot hide a visible one with it as its OpenAI batch id.
    seen = "" if companies is None else " AND company_id = ANY($2::text[])"
    args: list[Any] = [text] if companies is None else [text, sorted(companies)]
    found = await pool.fetchval(
        f"SELECT batch_id FROM batches WHERE batch_id = $1{seen}"
        f" UNION ALL SELECT batch_id FROM batches WHERE openai_batch_id = $1{seen} LIMIT 1",
        *args,
    )
    return None if found is None else str(found)
