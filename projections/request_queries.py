"""Read queries for the console's requests pages: filtered keyset pages newest first,
lookups by id, one request in full. Every query takes the reader's `companies`
(None: every company) and never returns another company's request.

Newest first over every status (or every company of a scoped reader) is one keyset
branch per (status, company) on the indexes (status, seq) and (company_id, status, seq),
merged by seq: PostgreSQL then reads only about `limit` rows per branch. A batch uses
(batch_id, seq); a session id uses the unique (company_id, session_id) over the known
companies. A model or a queued-at range is filtered along the way (see the report in
docs/console.md for the indexes that keep rare values fast).
"""

from __future__ import annotations

from datetime import datetime
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
    queued_from: datetime | None = None  # inclusive
    queued_before: datetime | None = None  # exclusive


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
    """Where a queued-at range lies in seq order: every request of the range has
    lo <= seq <= hi (None: unbounded). A guessed `lo` (exact_lo False) may be too high:
    rows below it are looked for when a page comes out short."""

    lo: int | None = None
    hi: int | None = None
    exact_lo: bool = True
    empty: bool = False


EVERYWHERE = SeqWindow()
INDEX_ONLY_ADVANTAGE = 8
"""About how many index entries the bounds' index-only scan reads in the time a walk
fetches one row from the heap to test its queued_at: it decides which costs less."""


def _range_sql(f: RequestFilter, a: _Args) -> str:
    where = []
    if f.queued_from is not None:
        where.append(f"queued_at >= {a.add(f.queued_from)}")
    if f.queued_before is not None:
        where.append(f"queued_at < {a.add(f.queued_before)}")
    return " AND ".join(where)


async def _exact_window(pool: Pool, f: RequestFilter) -> SeqWindow:
    """min and max seq of the range: an index-only scan of (queued_at, seq) over it."""
    a = _Args()
    row = await pool.fetchrow(
        f"SELECT min(seq), max(seq) FROM requests WHERE {_range_sql(f, a)}", *a.values
    )
    if row[0] is None:
        return SeqWindow(empty=True)
    return SeqWindow(lo=int(row[0]), hi=int(row[1]))


async def _seq_window(pool: Pool, f: RequestFilter) -> SeqWindow:
    """The seq bounds of the filter's queued-at range (three index probes, in one statement)."""
    if f.queued_from is None and f.queued_before is None:
        return EVERYWHERE
    a = _Args()
    inside = _range_sql(f, a)
    newer = "NULL::bigint"
    if f.queued_before is not None:
        newer = (
            f"(SELECT seq FROM requests WHERE queued_at >= {a.add(f.queued_before)}"
            " ORDER BY queued_at DESC LIMIT 1)"
        )
    row = await pool.fetchrow(
        f"SELECT (SELECT seq FROM requests WHERE {inside} ORDER BY queued_at LIMIT 1),"
        f" (SELECT seq FROM requests WHERE {inside} ORDER BY queued_at DESC LIMIT 1), {newer}",
        *a.values,
    )
    first, last, newest = row[0], row[1], row[2]
    if first is None:
        return SeqWindow(empty=True)
    # Requests queued after the range lie above it: skipping them by a walk costs a heap
    # fetch each, bounding it costs an index-only scan of the range. The cheaper wins.
    if newest is not None and max(newest - last, 0) * INDEX_ONLY_ADVANTAGE > last - first:
        return await _exact_window(pool, f)
    if f.queued_from is None:
        return EVERYWHERE
    # The first request of the range by queued_at is nearly always its first by seq.
    return SeqWindow(lo=int(first), exact_lo=False)


def _common(f: RequestFilter, a: _Args, before_seq: int | None, window: SeqWindow) -> list[str]:
    where = []
    if f.model is not None:
        where.append(f"model = {a.add(f.model)}")
    if f.queued_from is not None:
        where.append(f"queued_at >= {a.add(f.queued_from)}")
    if f.queued_before is not None:
        where.append(f"queued_at < {a.add(f.queued_before)}")
    if before_seq is not None:
        where.append(f"seq < {a.add(before_seq)}")
    if window.lo is not None:
        where.append(f"seq >= {a.add(window.lo)}")
    if window.hi is not None:
        where.append(f"seq <= {a.add(window.hi)}")
    return where


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
) -> tuple[list[RequestItem], int | None]:
    """A keyset page of the matching requests, newest first; and the seq to continue
    before (None: this was the last page)."""
    wanted = _companies_for(f, companies)
    if wanted == []:
        return [], None
    window = await _seq_window(pool, f)
    if window.empty:
        return [], None
    records = await _page(pool, f, limit, before_seq, wanted, window)
    if len(records) <= limit and not window.exact_lo:
        # A short page under a guessed lower bound: a request of the range may lie below
        # it (queued_at out of seq order); with the exact bound nothing can hide.
        exact = await _exact_window(pool, f)
        if exact.lo is not None and exact.lo < (window.lo or 0):
            records = await _page(pool, f, limit, before_seq, wanted, exact)
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
