"""The requests page's query filtered by queued-at days: the range becomes seq bounds
(projections/0003), which must never hide a request whose queued_at is out of seq order,
and must keep an old range from walking every newer request."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from projections import request_queries as rq
from service.adapters.database import migrate
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


def _day(n: int) -> datetime:
    return BASE + timedelta(days=n)


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


async def _expected(pool: asyncpg.Pool, f: rq.RequestFilter) -> list[int]:
    """The same filter by brute force: every row tested, newest first."""
    rows = await pool.fetch(
        "SELECT seq FROM requests WHERE ($1::timestamptz IS NULL OR queued_at >= $1)"
        " AND ($2::timestamptz IS NULL OR queued_at < $2)"
        " AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR company_id = $4)"
        " ORDER BY seq DESC",
        f.queued_from,
        f.queued_before,
        f.statuses[0].value if f.statuses else None,
        f.company_id,
    )
    return [r[0] for r in rows]


RANGES = [(0, 1), (3, 4), (10, 17), (20, 21), (0, 30), (35, 50), (41, 42), (60, 61)]


async def test_a_queued_at_range_lists_exactly_its_requests_even_out_of_seq_order(
    pool: asyncpg.Pool,
) -> None:
    await _fill(pool)
    filters = []
    for start, end in RANGES:
        filters += [
            rq.RequestFilter(queued_from=_day(start), queued_before=_day(end)),
            rq.RequestFilter(queued_before=_day(end)),
            rq.RequestFilter(queued_from=_day(start)),
            rq.RequestFilter(
                queued_from=_day(start),
                queued_before=_day(end),
                statuses=(RequestState.PROCESSING_FAILED,),
                company_id="co1",
            ),
        ]
    for f in filters:
        expected = await _expected(pool, f)
        for size in (7, 50):
            assert await _every_page(pool, f, size) == expected, f


async def test_a_request_far_below_the_guessed_bound_still_shows_on_a_short_page(
    pool: asyncpg.Pool,
) -> None:
    """From a day on (no end): the lower bound is guessed from the day's first request by
    queued_at; one queued that day but with an old seq (its clock was days behind when
    the others' were right) must still be found when the page comes out short."""
    await _fill(pool)
    late = _day(ROWS * STEP // timedelta(days=1) + 30)  # after every generated request
    await pool.execute(_INSERT, [ROWS + 1], ["co0"], ["PENDING_BATCHING"], [late])
    f = rq.RequestFilter(queued_from=late)
    page, _ = await rq.requests_newest_first(pool, f, 50)
    assert [r.seq for r in page] == [ROWS + 1]
    await pool.execute("UPDATE requests SET queued_at = $1 WHERE seq = 2", late + STEP)
    page, more = await rq.requests_newest_first(pool, f, 50)
    assert [r.seq for r in page] == [ROWS + 1, 2]
    assert more is None


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
    f = rq.RequestFilter(queued_from=_day(1), queued_before=_day(2))
    async with pool.acquire() as conn:
        before = await _rows_read(conn)
        page, _ = await rq.requests_newest_first(conn, f, 50)
        read = await _rows_read(conn) - before
    assert len(page) == 50
    assert read <= 4 * 1_500, f"{read} rows read from the table for a page of 50"


async def test_the_queued_at_index_is_built_on_an_upgraded_database(
    pool: asyncpg.Pool, db_dsn: str
) -> None:
    await _fill(pool)
    await pool.execute("DROP INDEX requests_queued_at_seq_idx")
    await pool.execute(
        "DELETE FROM schema_migrations WHERE name = 'projections/0003_requests_queued_at.sql'"
    )
    assert await migrate(db_dsn) == ["projections/0003_requests_queued_at.sql"]
    found = await pool.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'requests_queued_at_seq_idx'"
    )
    assert found is not None
    assert "(queued_at, seq)" in found
