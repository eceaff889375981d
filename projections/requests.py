"""Projection "requests": the requests table, per-status counters and session analyses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import assert_never

import asyncpg
import msgspec

from eventstore import RecordedEvent
from projections.base import ID_LIST, Decoded, KeyedReplay, Tables, join_ids, upsert
from statemachine.events import (
    REQUEST_EVENTS,
    RequestBatched,
    RequestCompleted,
    RequestEvent,
    RequestFailed,
    RequestQueued,
    RequestRequeued,
)
from statemachine.request import next_state
from statemachine.states import RequestState


class RequestRow(msgspec.Struct, kw_only=True, gc=False):
    """One row of `requests`; field order is column order."""

    request_id: str
    seq: int
    company_id: str
    session_id: str
    model: str
    source: str
    status: RequestState
    batch_id: str | None = None
    attempts: int = 0
    last_error_code: str | None = None
    last_error_message: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_micro_usd: int = 0
    queued_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    version: int
    position: int


COLUMNS = tuple(RequestRow.__struct_fields__)
_replace = msgspec.structs.replace


def project(
    row: RequestRow | None, recorded: RecordedEvent, event: RequestEvent
) -> RequestRow | None:
    """The row after one event (pure); the status comes from the domain's `next_state`."""
    at, pos, ver = recorded.metadata.occurred_at, recorded.position, recorded.version
    if isinstance(event, RequestQueued):
        return RequestRow(
            request_id=event.request_id,
            seq=pos,
            company_id=event.company_id,
            session_id=event.session_id,
            model=event.model,
            source=event.source,
            status=RequestState.PENDING_BATCHING,
            queued_at=at,
            updated_at=at,
            version=ver,
            position=pos,
        )
    if row is None:
        return None  # an event for a request whose RequestQueued this table never saw
    row = _replace(
        row,
        status=next_state(row.request_id, row.status, event),
        updated_at=at,
        version=ver,
        position=pos,
    )
    # `row` is this call's own copy: setting its fields keeps project() pure.
    match event:
        case RequestBatched():
            row.batch_id, row.attempts = event.batch_id, event.attempt
        case RequestCompleted():
            u = event.usage
            row.prompt_tokens += u.prompt_tokens
            row.completion_tokens += u.completion_tokens
            row.total_tokens += u.total_tokens
            row.cost_micro_usd += event.cost_micro_usd
            row.last_error_code = row.last_error_message = None
            row.completed_at = at
        case RequestFailed():
            row.last_error_code, row.last_error_message = event.code, event.message
        case RequestRequeued():
            row.batch_id = None
        case _:
            assert_never(event)
    return row


def analysis_row(
    row: RequestRow, recorded: RecordedEvent, event: RequestCompleted
) -> tuple[object, ...]:
    """A `session_analyses` row for a completed request."""
    a = event.analysis
    return (
        row.request_id,
        row.company_id,
        row.session_id,
        str(a.get("language", "")),
        str(a.get("sentiment", "")),
        bool(a.get("escalated")),
        bool(a.get("forwarded_hr")),
        str(a.get("category", "")),
        msgspec.json.encode(a.get("questions", [])),
        str(a.get("summary", "")),
        recorded.metadata.occurred_at,
    )


def fold(
    rows: dict[str, RequestRow], events: Sequence[Decoded], analyses: dict[str, tuple[object, ...]]
) -> None:
    """Fold events over the rows by request id, collecting the analyses of completions."""
    for recorded, event in events:
        if not isinstance(event, REQUEST_EVENTS):
            continue
        rid = event.request_id
        new = project(rows.get(rid), recorded, event)
        if new is None:
            continue
        rows[rid] = new
        if isinstance(event, RequestCompleted):
            analyses[rid] = analysis_row(new, recorded, event)


class RequestsProjection:
    """Requests, their counters and analyses, from the `request` streams."""

    name: str = "requests"
    tables: tuple[str, ...] = (
        "requests",
        "request_status_counts",
        "session_analyses",
        "request_hours",
        "request_days",
    )
    categories: tuple[str, ...] = ("request",)

    async def apply(
        self, conn: asyncpg.Connection, tables: Tables, events: Sequence[Decoded]
    ) -> None:
        """Load the touched rows, fold the events over them, write rows, counters, analyses."""
        ids = list({ev.request_id for _, ev in events if isinstance(ev, REQUEST_EVENTS)})
        rows = await _load(conn, tables["requests"], ids)
        before = {rid: (r.company_id, r.status) for rid, r in rows.items()}
        seqs = {rid: r.seq for rid, r in rows.items()}
        finished = {rid: _finished(r) for rid, r in rows.items()}
        analyses: dict[str, tuple[object, ...]] = {}
        fold(rows, events, analyses)
        await _save(conn, tables, rows, analyses)
        await _count(conn, tables["request_status_counts"], before, rows)
        await _count_hours(conn, tables["request_hours"], finished, rows)
        queued = [r for rid, r in rows.items() if seqs.get(rid) != r.seq]
        await _count_days(conn, tables["request_days"], queued)

    async def resume(self, conn: asyncpg.Connection, tables: Tables) -> None:
        """Count into request_days what a runner of an older version projected without it."""
        # Seq only grows, so those requests lie above the highest seq counted: in a rolling
        # upgrade an old `serve` may hold the lead after migration 0004 counted the rest.
        sql = count_days_sql(tables["requests"], tables["request_days"], uncounted_only=True)
        await conn.execute(sql)

    def replay(self) -> RequestsReplay:
        """An in-memory fold for a rebuild."""
        return RequestsReplay()


class RequestsReplay(KeyedReplay[RequestRow]):
    """A rebuild's fold of requests and analyses; the counters are counted at the end."""

    table = "requests"
    key_field = "request_id"

    def __init__(self) -> None:
        super().__init__()
        self.analyses: dict[str, tuple[object, ...]] = {}

    @property
    def held(self) -> int:
        """Requests and analyses held in memory."""
        return len(self.rows) + len(self.analyses)

    async def load(
        self, conn: asyncpg.Connection, table: str, ids: list[str]
    ) -> dict[str, RequestRow]:
        """Stored requests by id."""
        return await _load(conn, table, ids)

    def fold(self, events: Sequence[Decoded]) -> None:
        """Fold into the requests and analyses in memory."""
        fold(self.rows, events, self.analyses)

    async def save(self, conn: asyncpg.Connection, tables: Tables, *, fresh: bool) -> None:
        """Write requests and analyses."""
        await _save(conn, tables, self.rows, self.analyses, fresh=fresh)
        self.analyses.clear()

    async def finish(self, conn: asyncpg.Connection, tables: Tables) -> None:
        """Write what is left, then count the rebuilt requests by company and status."""
        await super().finish(conn, tables)
        await conn.execute(
            f"INSERT INTO {tables['request_status_counts']} (company_id, status, n)"
            f" SELECT company_id, status, count(*) FROM {tables['requests']} GROUP BY 1, 2"
        )
        await conn.execute(count_hours_sql(tables["requests"], tables["request_hours"]))
        await conn.execute(count_days_sql(tables["requests"], tables["request_days"]))


async def _load(conn: asyncpg.Connection, table: str, ids: list[str]) -> dict[str, RequestRow]:
    records = await conn.fetch(
        f"SELECT {', '.join(COLUMNS)} FROM {table} WHERE request_id = ANY({ID_LIST})", join_ids(ids)
    )
    rows = {r[0]: RequestRow(**dict(r)) for r in records}
    for row in rows.values():
        row.status = RequestState(row.status)
    return rows


async def _save(
    conn: asyncpg.Connection,
    tables: Tables,
    rows: dict[str, RequestRow],
    analyses: dict[str, tuple[object, ...]],
    *,
    fresh: bool = False,
) -> None:
    astuple = msgspec.structs.astuple
    records = [astuple(r) for r in rows.values()]
    await upsert(conn, tables["requests"], COLUMNS, "request_id", records, fresh=fresh)
    found = list(analyses.values())
    await upsert(
        conn, tables["session_analyses"], ANALYSIS_COLUMNS, "request_id", found, fresh=fresh
    )


async def _count(
    conn: asyncpg.Connection,
    table: str,
    before: Mapping[str, tuple[str, str]],
    rows: dict[str, RequestRow],
) -> None:
    deltas: dict[tuple[str, str], int] = {}
    for rid, row in rows.items():
        old, new = before.get(rid), (row.company_id, row.status)
        if old == new:
            continue
        if old is not None:
            deltas[old] = deltas.get(old, 0) - 1
        deltas[new] = deltas.get(new, 0) + 1
    deltas = {k: v for k, v in deltas.items() if v}
    if deltas:
        keys = list(deltas)
        await conn.execute(
            f"INSERT INTO {table} (company_id, status, n)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])"
            f" ON CONFLICT (company_id, status) DO UPDATE SET n = {table}.n + excluded.n",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [deltas[k] for k in keys],
        )
        # No zero rows: a rebuild, which chunks differently, must produce the same table.
        await conn.execute(f"DELETE FROM {table} WHERE n = 0")


Finished = tuple[str, datetime, int, int, int]  # company, hour, completed, failed, cost


def count_hours_sql(requests: str, hours: str) -> str:
    """`hours` counted from the rows of `requests` (a rebuild, or rows loaded in bulk): the
    same grouping `_finished` keeps row by row."""
    return (
        f"INSERT INTO {hours} (company_id, hour, completed, failed, cost_micro_usd)"
        " SELECT company_id, hour, sum(completed), sum(failed), sum(cost) FROM ("
        "  SELECT company_id, date_trunc('hour', completed_at, 'UTC') AS hour,"
        "   1 AS completed, 0 AS failed, cost_micro_usd AS cost"
        f"  FROM {requests} WHERE status = 'PROCESSING_COMPLETE'"
        "  UNION ALL"
        "  SELECT company_id, date_trunc('hour', updated_at, 'UTC'), 0, 1, 0"
        f"  FROM {requests} WHERE status = 'PROCESSING_FAILED'"
        " ) t GROUP BY 1, 2"
    )


def _hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _finished(row: RequestRow) -> Finished | None:
    """Where a finished request counts in `request_hours`: completed in the hour of its
    completion (with its cost), failed in the hour of its failure; None while unfinished."""
    if row.status is RequestState.PROCESSING_COMPLETE and row.completed_at is not None:
        return (row.company_id, _hour(row.completed_at), 1, 0, row.cost_micro_usd)
    if row.status is RequestState.PROCESSING_FAILED:
        return (row.company_id, _hour(row.updated_at), 0, 1, 0)
    return None


async def _count_hours(
    conn: asyncpg.Connection,
    table: str,
    before: Mapping[str, Finished | None],
    rows: dict[str, RequestRow],
) -> None:
    """Keep `request_hours` equal to the finished requests grouped by company and hour: a
    requeued failure leaves its hour, a completion enters its own."""
    deltas: dict[tuple[str, datetime], list[int]] = {}
    for rid, row in rows.items():
        old, new = before.get(rid), _finished(row)
        if old == new:
            continue
        for entry, sign in ((old, -1), (new, 1)):
            if entry is not None:
                company, hour, completed, failed, cost = entry
                d = deltas.setdefault((company, hour), [0, 0, 0])
                d[0], d[1], d[2] = d[0] + sign * completed, d[1] + sign * failed, d[2] + sign * cost
    keys = [k for k, d in deltas.items() if any(d)]
    if not keys:
        return
    await conn.execute(
        f"INSERT INTO {table} (company_id, hour, completed, failed, cost_micro_usd)"
        " SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[],"
        " $5::bigint[]) ON CONFLICT (company_id, hour) DO UPDATE SET"
        f" completed = {table}.completed + excluded.completed,"
        f" failed = {table}.failed + excluded.failed,"
        f" cost_micro_usd = {table}.cost_micro_usd + excluded.cost_micro_usd",
        [k[0] for k in keys],
        [k[1] for k in keys],
        *([deltas[k][i] for k in keys] for i in range(3)),
    )
    # No empty rows: a rebuild, which counts the final rows, must produce the same table.
    await conn.execute(f"DELETE FROM {table} WHERE completed = 0 AND failed = 0")


def count_days_sql(requests: str, days: str, *, uncounted_only: bool = False) -> str:
    """`days` counted from the rows of `requests` as `_count_days` keeps it (rebuild, bulk
    load; `uncounted_only`: the rows above the highest seq counted, for `resume`)."""
    where = f" WHERE seq > (SELECT coalesce(max(max_seq), 0) FROM {days})" if uncounted_only else ""
    return (
        f"INSERT INTO {days} (day, min_seq, max_seq)"
        " SELECT (queued_at AT TIME ZONE 'UTC')::date, min(seq), max(seq)"
        f" FROM {requests}{where} GROUP BY 1"
        f" ON CONFLICT (day) DO UPDATE SET min_seq = LEAST({days}.min_seq, excluded.min_seq),"
        f" max_seq = GREATEST({days}.max_seq, excluded.max_seq)"
    )


async def _count_days(conn: asyncpg.Connection, table: str, queued: list[RequestRow]) -> None:
    """Widen each UTC day's seq bounds in `request_days` by the requests just queued."""
    bounds: dict[date, tuple[int, int]] = {}
    for row in queued:
        day = row.queued_at.astimezone(UTC).date()
        lo, hi = bounds.get(day, (row.seq, row.seq))
        bounds[day] = (min(lo, row.seq), max(hi, row.seq))
    if not bounds:
        return
    days = sorted(bounds)  # rows locked in one order by every writer
    await conn.execute(
        f"INSERT INTO {table} (day, min_seq, max_seq)"
        " SELECT * FROM unnest($1::date[], $2::bigint[], $3::bigint[])"
        f" ON CONFLICT (day) DO UPDATE SET min_seq = LEAST({table}.min_seq, excluded.min_seq),"
        f" max_seq = GREATEST({table}.max_seq, excluded.max_seq)",
        days,
        [bounds[d][0] for d in days],
        [bounds[d][1] for d in days],
    )


ANALYSIS_COLUMNS = (
    "request_id",
    "company_id",
    "session_id",
    "language",
    "sentiment",
    "escalated",
    "forwarded_hr",
    "category",
    "questions",
    "summary",
    "analysed_at",
)
