"""The requests page's query filtered by queued-at days: the days become seq bounds
(the `request_days` rollup, projections/0004), which must never hide a request whose
queued_at is out of seq order, and must keep an old range from walking every newer
request."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from eventstore import EventStore
from projections import console_queries as cq
from projections import request_queries as rq
from projections.requests import RequestsProjection, count_days_sql
from projections.runner import ProjectionRunner
from service.adapters.database import migrate
from service.application.ledger import Ledger
from service.ids import uuid7
from service.tools.synthetic import queue_many
from statemachine.states import RequestState

BASE = datetime(2026, 1, 1, tzinfo=UTC)
ROWS = 6_000
STEP = timedelta(minutes=10)  # 144 requests a day, over about 42 days

_INSERT = """
INSERT INTO requests (request_id, seq, company_id, session_id, model, source, status,
                      queued_at, updated_at, version, position)
SELECT 'r' || s, s, c, 's' || s, 'gpt-4o-mini', 'test', st, q, q, 1, s
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[]) AS t(s, c, st, q)
"""


def _day(n: int) -> date:
    return (BASE + timedelta(days=n)).date()


def _queued_at(seq: int, rng: random.Random, far: bool, step: timedelta) -> datetime:
    """Nearly monotone in seq, as the ledger's clocks make it; with `far`, a few far out of
    order."""
    at = BASE + step * seq
    if not far:
        pass
    elif seq % 211 == 0:  # an instance whose clock is days behind
        return at - timedelta(days=rng.randint(1, 20))
    if seq % 307 == 0:  # ... or days ahead
        return at + timedelta(days=rng.randint(1, 20))
    return at + timedelta(seconds=rng.randint(-900, 900))  # concurrent writers


async def _fill(
    pool: asyncpg.Pool, *, far: bool = True, rows: int = ROWS, step: timedelta = STEP
) -> None:
    rng = random.Random(16)
    statuses = [s.value for s in RequestState]
    made = [
        (s, f"co{s % 3}", statuses[s % 4], _queued_at(s, rng, far, step))
        for s in range(1, rows + 1)
    ]
    await pool.execute(_INSERT, *(list(col) for col in zip(*made, strict=True)))
    await pool.execute(count_days_sql("requests", "request_days"))  # as a rebuild counts them
    await pool.execute("VACUUM ANALYZE requests")


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    yield p
    await p.close()


async def _every_page(pool: asyncpg.Pool, f: rq.RequestFilter, size: int) -> list[int]:
    seqs: list[int] = []
    before: int | None = None
    while True:
        page, before = await rq.requests_newest_first(pool, f, size, before_seq=before)
        seqs += [r.seq for r in page]
        if before is None:
            return seqs


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, datetime.min.time(), UTC)


async def _expected(pool: asyncpg.Pool, f: rq.RequestFilter) -> list[int]:
    """The same filter by brute force: every row tested, newest first."""
    rows = await pool.fetch(
        "SELECT seq FROM requests WHERE ($1::timestamptz IS NULL OR queued_at >= $1)"
        " AND ($2::timestamptz IS NULL OR queued_at < $2)"
        " AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR company_id = $4)"
        " ORDER BY seq DESC",
        _midnight(f.queued_from),
        _midnight(f.queued_to and f.queued_to + timedelta(days=1)),
        f.statuses[0].value if f.statuses else None,
        f.company_id,
    )
    return [r[0] for r in rows]


RANGES = [(0, 0), (3, 3), (10, 16), (20, 20), (0, 29), (35, 49), (41, 41), (60, 60)]


async def test_a_queued_at_range_lists_exactly_its_requests_even_out_of_seq_order(
    pool: asyncpg.Pool,
) -> None:
    await _fill(pool)
    filters = []
    for start, end in RANGES:
        filters += [
            rq.RequestFilter(queued_from=_day(start), queued_to=_day(end)),
            rq.RequestFilter(queued_to=_day(end)),
            rq.RequestFilter(queued_from=_day(start)),
            rq.RequestFilter(
                queued_from=_day(start),
                queued_to=_day(end),
                statuses=(RequestState.PROCESSING_FAILED,),
                company_id="co1",
            ),
        ]
    for f in filters:
        expected = await _expected(pool, f)
        for size in (7, 50):
            assert await _every_page(pool, f, size) == expected, f


async def test_the_day_bounds_follow_requests_projected_after_them(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    """Bounds read from `request_days` as the projection keeps it: a request queued on an
    old day (its clock far behind) after newer ones widens that day, and is listed."""
    led = Ledger(store, clock=lambda: BASE + timedelta(days=5), new_id=uuid7)
    await queue_many(led, 3, prefix="new")
    led = Ledger(store, clock=lambda: BASE + timedelta(days=1, hours=3), new_id=uuid7)
    await queue_many(led, 1, prefix="old")
    await ProjectionRunner(store, RequestsProjection()).catch_up()
    f = rq.RequestFilter(queued_from=_day(1), queued_to=_day(1))
    page, more = await rq.requests_newest_first(pool, f, 50)
    assert [r.request_id for r in page] == ["old0"]
    assert more is None
    page, _ = await rq.requests_newest_first(pool, rq.RequestFilter(queued_to=_day(4)), 50)
    assert [r.request_id for r in page] == ["old0"]
    assert await pool.fetch("SELECT day, min_seq, max_seq FROM request_days ORDER BY day") == [
        (_day(1), 4, 4),
        (_day(5), 1, 3),
    ]
    empty = rq.RequestFilter(queued_from=_day(2), queued_to=_day(4))
    assert await rq.seq_window(pool, empty) == rq.SeqWindow(empty=True)


async def _rows_read(conn: asyncpg.Connection) -> int:
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    found = await conn.fetchval(
        "SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)"
        " FROM pg_stat_user_tables WHERE relname = 'requests'"
    )
    return int(found)


async def test_an_old_queued_at_range_reads_only_its_own_rows_not_every_newer_one(
    pool: asyncpg.Pool,
) -> None:
    """Before the seq bounds, the second day's page walked every newer request (57,000
    rows read here; 1.3-3.6 s at 1,000,000 requests); now at most the day's rows once per
    status branch (1,440 a day)."""
    await _fill(pool, far=False, rows=60_000, step=timedelta(minutes=1))
    f = rq.RequestFilter(queued_from=_day(1), queued_to=_day(1))
    async with pool.acquire() as conn:
        before = await _rows_read(conn)
        page, _ = await rq.requests_newest_first(conn, f, 50)
        read = await _rows_read(conn) - before
    assert len(page) == 50
    assert read <= 4 * 1_500, f"{read} rows read from the table for a page of 50"


async def _index_entries_read(conn: asyncpg.Connection) -> int:
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    found = await conn.fetchval(
        "SELECT sum(idx_tup_read) FROM pg_stat_user_indexes WHERE relname = 'requests'"
    )
    return int(found)


async def test_a_selective_filter_over_weeks_reads_about_a_page_of_index_entries(
    pool: asyncpg.Pool,
) -> None:
    """Failed requests of one company over 30 days: the bounds come from a few rows of
    `request_days`, not from scanning the range's 43,200 index entries (which made such a
    page 40-144 ms at 1,000,000 requests)."""
    await _fill(pool, far=False, rows=60_000, step=timedelta(minutes=1))
    f = rq.RequestFilter(
        queued_from=_day(5),
        queued_to=_day(34),
        statuses=(RequestState.PROCESSING_FAILED,),
        company_id="co1",
    )
    async with pool.acquire() as conn:
        before = await _index_entries_read(conn)
        page, _ = await rq.requests_newest_first(conn, f, 50)
        read = await _index_entries_read(conn) - before
    assert len(page) == 50
    assert read <= 500, f"{read} index entries read for a page of 50"


async def test_the_days_migration_counts_the_requests_queued_before_it(
    pool: asyncpg.Pool, db_dsn: str
) -> None:
    """An upgraded database gets `request_days` from its requests, as a rebuild counts them."""
    await _fill(pool)
    kept = await pool.fetch("SELECT * FROM request_days ORDER BY day")
    assert len(kept) > 40
    await pool.execute("DROP TABLE request_days")  # as just before the migration
    await pool.execute(
        "DELETE FROM schema_migrations WHERE name = 'projections/0004_request_days.sql'"
    )
    assert await migrate(db_dsn) == ["projections/0004_request_days.sql"]
    assert await pool.fetch("SELECT * FROM request_days ORDER BY day") == kept


async def test_finding_a_batch_skips_another_companys_batch_of_that_id_for_a_visible_one(
    pool: asyncpg.Pool,
) -> None:
    """globex's batch id is acme's OpenAI batch id: acme's reader still finds acme's."""
    await pool.execute(
        "INSERT INTO batches (batch_id, seq, company_id, model, status, request_count,"
        " openai_batch_id, planned_at, updated_at, version, position)"
        " SELECT b, s, c, 'gpt-4o-mini', 'SUBMITTED', 1, o, now(), now(), 1, s"
        " FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS t(b, s, c, o)",
        ["batch_x", "b-acme"],
        [1, 2],
        ["globex", "acme"],
        [None, "batch_x"],
    )
    assert await cq.find_batch(pool, "batch_x", companies=frozenset({"acme"})) == "b-acme"
    assert await cq.find_batch(pool, "batch_x", companies=frozenset({"globex"})) == "batch_x"
    assert await cq.find_batch(pool, "batch_x", companies=frozenset({"initech"})) is None
    assert await cq.find_batch(pool, "batch_x", companies=None) == "batch_x"
