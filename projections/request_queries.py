"""Read queries for the console's requests pages: filtered keyset pages newest first,
lookups by id, one request in full. Every query takes the reader's `companies`
(None: every company) and never returns another company's request.

Newest first over every status (or every company of a scoped reader) is one keyset
branch per (status, company) on the indexes (status, seq) and (company_id, status, seq),
merged by seq: PostgreSQL then reads only about `limit` rows per branch. A batch uses
(batch_id, seq); a session id uses the unique (company_id, session_id) over the known
companies. A model is filtered along the way; days of queueing bound the walk by seq
first (`seq_window`, from the `request_days` rollup) and are tested on every row.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import msgspec

from projections import queries
from projections.queries import RequestItem, RequestView
from statemachine.states import RequestState

Pool = Any  # an asyncpg Pool or Connection
Companies = frozenset[str] | None

MAX_BRANCHES = 64
"""Above this many (status, company) branches one plain query is cheaper to plan."""


class RequestFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What the requests page filters by; None or empty: no filter on it."""

    statuses: tuple[RequestState, ...] = ()  # empty: every status
    company_id: str | None = None
    batch_id: str | None = None
    model: str | None = None
    session_id: str | None = None
    # Whole UTC days, both included: the `request_days` rollup bounds them by seq.
    queued_from: date | None = None
    queued_to: date | None = None


_COLUMNS = ", ".join(RequestItem.__struct_fields__)
_ALL = tuple(RequestState)


class _Args:
    """Positional parameters of one statement."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _companies_for(f: RequestFilter, companies: Companies) -> list[str] | None:
    """The companies to read (None: all); empty: nothing is visible."""
    if f.company_id is not None:
        return [f.company_id] if companies is None or f.company_id in companies else []
    return None if companies is None else sorted(companies)


class SeqWindow(msgspec.Struct, frozen=True):
    """Where a days filter lies in seq order: lo <= seq <= hi (None: unbounded)."""

    # Every request queued in the filter's days lies inside; not every row inside was
    # queued in them (queued_at is the ledger's clock, only nearly in seq order).
    lo: int | None = None
    hi: int | None = None
    empty: bool = False  # no request was queued in those days


EVERYWHERE = SeqWindow()


async def seq_window(pool: Pool, f: RequestFilter) -> SeqWindow:
    """The seq bounds of the filter's days, from the projection's `request_days` rollup."""
    if f.queued_from is None and f.queued_to is None:
        return EVERYWHERE
    a = _Args()
    where = []
    if f.queued_from is not None:
        where.append(f"day >= {a.add(f.queued_from)}")
    if f.queued_to is not None:
        where.append(f"day <= {a.add(f.queued_to)}")
    row = await pool.fetchrow(
        f"SELECT min(min_seq), max(max_seq) FROM request_days WHERE {' AND '.join(where)}",
        *a.values,
    )
    if row[0] is None:
        return SeqWindow(empty=True)
    # An open end stays open: what is queued later belongs to it as well.
    lo = int(row[0]) if f.queued_from is not None else None
    hi = int(row[1]) if f.queued_to is not None else None
    return SeqWindow(lo=lo, hi=hi)


def _common(f: RequestFilter, a: _Args, before_seq: int | None, window: SeqWindow) -> list[str]:
    where = []
    if f.model is not None:
        where.append(f"model = {a.add(f.model)}")
    # The days and their seq bounds are written into the statement, not sent as
    # parameters: a cached statement's generic plan guessed a parameter range selects
    # almost nothing and sorted every match of a month (100-190 ms at 1,000,000 requests)
    # instead of walking the index newest first. They are dates and ints: nothing to quote.
    if f.queued_from is not None:
        where.append(f"queued_at >= {_instant(f.queued_from)}")
    if f.queued_to is not None and f.queued_to < date.max:
        where.append(f"queued_at < {_instant(f.queued_to + timedelta(days=1))}")
    if window.lo is not None:
        where.append(f"seq >= {int(window.lo)}")
    if window.hi is not None:
        where.append(f"seq <= {int(window.hi)}")
    if before_seq is not None:
        where.append(f"seq < {a.add(before_seq)}")
    return where


def _instant(day: date) -> str:
    """The start of a UTC day as an SQL literal."""
    return f"'{datetime.combine(day, time(), UTC).isoformat()}'::timestamptz"


async def _known_companies(pool: Pool) -> list[str]:
    """Every company with requests (from the small counters table)."""
    rows = await pool.fetch("SELECT DISTINCT company_id FROM request_status_counts ORDER BY 1")
    return [r[0] for r in rows]


async def requests_newest_first(
    pool: Pool,
    f: RequestFilter,
    limit: int,
    *,
    before_seq: int | None = None,
    companies: Companies = None,
    window: SeqWindow | None = None,
) -> tuple[list[RequestItem], int | None]:
    """A page of the matching requests, newest first, and the seq to go on before (None: last)."""
    # `window` is `seq_window(pool, f)`, read here when not given: a caller walking many
    # pages of one filter (the CSV export, requeue-all) reads it once.
    wanted = _companies_for(f, companies)
    if wanted == []:
        return [], None
    if window is None:
        window = await seq_window(pool, f)
    if window.empty:
        return [], None
    records = await _page(pool, f, limit, before_seq, wanted, window)
    page = msgspec.convert([dict(r) for r in records[:limit]], list[RequestItem])
    return page, (page[-1].seq if len(records) > limit else None)


async def _page(
    pool: Pool,
    f: RequestFilter,
    limit: int,
    before_seq: int | None,
    wanted: list[str] | None,
    window: SeqWindow,
) -> list[Any]:
    """Up to limit + 1 matching rows, newest first, inside `window`."""
    statuses = f.statuses or _ALL
    a = _Args()
    if f.session_id is not None or f.batch_id is not None:
        where = _common(f, a, before_seq, window)
        if f.session_id is not None:
            # The unique (company_id, session_id) index, one probe per company.
            names = wanted if wanted is not None else await _known_companies(pool)
            where.append(f"company_id = ANY({a.add(names)}::text[])")
            where.append(f"session_id = {a.add(f.session_id)}")
        elif wanted is not None:
            where.append(f"company_id = ANY({a.add(wanted)}::text[])")
        if f.batch_id is not None:
            where.append(f"batch_id = {a.add(f.batch_id)}")
        if len(statuses) < len(_ALL):
            where.append(f"status = ANY({a.add([s.value for s in statuses])}::text[])")
        sql = (
            f"SELECT {_COLUMNS} FROM requests WHERE {' AND '.join(where)}"
            f" ORDER BY seq DESC LIMIT {a.add(limit + 1)}"
        )
    else:
        groups: list[str | None] = list(wanted) if wanted is not None else [None]
        common = _common(f, a, before_seq, window)
        lim = a.add(limit + 1)
        if len(statuses) * len(groups) <= MAX_BRANCHES:
            branches = []
            for status in statuses:
                for company in groups:
                    where = [f"status = {a.add(status.value)}", *common]
                    if company is not None:
                        where.append(f"company_id = {a.add(company)}")
                    branches.append(
                        f"(SELECT {_COLUMNS} FROM requests WHERE {' AND '.join(where)}"
                        f" ORDER BY seq DESC LIMIT {lim})"
                    )
            sql = f"SELECT * FROM ({' UNION ALL '.join(branches)}) u ORDER BY seq DESC LIMIT {lim}"
        else:
            where = [f"status = ANY({a.add([s.value for s in statuses])}::text[])", *common]
            where.append(f"company_id = ANY({a.add(wanted)}::text[])")
            sql = (
                f"SELECT {_COLUMNS} FROM requests WHERE {' AND '.join(where)}"
                f" ORDER BY seq DESC LIMIT {lim}"
            )
    return list(await pool.fetch(sql, *a.values))


async def visible_request_id(
    pool: Pool, request_id: str, *, companies: Companies = None
) -> str | None:
    """`request_id` when such a request exists and the reader may see it."""
    company = await pool.fetchval(
        "SELECT company_id FROM requests WHERE request_id = $1", request_id
    )
    if company is None or (companies is not None and company not in companies):
        return None
    return request_id


async def request_detail(
    pool: Pool, request_id: str, *, companies: Companies = None
) -> RequestView | None:
    """One request with its analysis, usage and cost (None: unknown or not visible)."""
    found = await queries.request_detail(pool, request_id)
    if found is None or (companies is not None and found.company_id not in companies):
        return None
    return found
