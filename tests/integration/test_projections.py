"""Projections: rows from events, exactly-once chunks, rebuild equal to live, live reads."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

import projections
from eventstore import EventStore
from projections import queries
from projections.batches import BatchesProjection
from projections.rebuild import rebuild
from projections.requests import RequestsProjection
from projections.runner import ProjectionRunner
from service.application.ledger import Ledger
from service.ids import uuid7
from service.tools.synthetic import ledger, queue_many, requeue_failed, run_batch
from statemachine.states import RequestState

REQUESTS, BATCHES = RequestsProjection(), BatchesProjection()
START = datetime(2026, 3, 1, tzinfo=UTC)


async def catch_up(store: EventStore) -> None:
    for p in (REQUESTS, BATCHES):
        await ProjectionRunner(store, p).catch_up()


async def test_requests_rows_counters_and_analyses_follow_the_events(store: EventStore) -> None:
    agg = ledger(store)
    ids = await queue_many(agg, 10)
    await catch_up(store)
    assert await queries.summary(store.pool) == queries.StatusCounts(
        pending_batching=10,
        batching_in_progress=0,
        processing_complete=0,
        processing_failed=0,
    )
    await run_batch(agg, "b1", ids, fail_every=5, retryable=False)
    await catch_up(store)
    assert await queries.summary(store.pool) == queries.StatusCounts(
        pending_batching=0,
        batching_in_progress=0,
        processing_complete=8,
        processing_failed=2,
    )
    done = await queries.request_detail(store.pool, "r1")
    assert done is not None
    assert (done.status, done.batch_id, done.attempts) == ("PROCESSING_COMPLETE", "b1", 1)
    assert (done.total_tokens, done.cost_micro_usd, done.analysis and done.analysis.category) == (
        15,
        7,
        "SCHEDULE_HOURS",
    )
    failed = await queries.request_detail(store.pool, "r0")
    assert failed is not None
    assert (failed.status, failed.last_error_code, failed.analysis) == (
        "PROCESSING_FAILED",
        "server_error",
        None,
    )
    assert await requeue_failed(agg, ids) == 2
    await catch_up(store)
    assert (await queries.summary(store.pool)).pending_batching == 2
    assert (await queries.summary(store.pool, company_id="other")).pending_batching == 0


async def test_batches_row_follows_the_lifecycle(store: EventStore) -> None:
    agg = ledger(store)
    ids = await queue_many(agg, 4)
    await run_batch(agg, "b1", ids, fail_every=2)
    await catch_up(store)
    row = await queries.batch_detail(store.pool, "b1")
    assert row is not None
    assert (row.status, row.openai_batch_id, row.output_file_id) == (
        "PROCESSED",
        "batch_b1",
        "out-b1",
    )
    assert (row.request_count, row.completed, row.failed) == (4, 2, 2)
    assert row.submitted_at is not None
    assert row.processed_at is not None


async def test_keyset_pages_walk_each_row_once_in_queue_order(store: EventStore) -> None:
    agg = ledger(store)
    await queue_many(agg, 25)
    await catch_up(store)
    seen, cursor = [], None
    while True:
        page, cursor = await queries.requests_page(
            store.pool, RequestState.PENDING_BATCHING, 10, after_seq=cursor
        )
        seen += [r.request_id for r in page]
        if cursor is None:
            break
    assert seen == [f"r{i}" for i in range(25)]


async def test_runner_killed_between_apply_and_commit_applies_nothing_twice(
    store: EventStore,
) -> None:
    agg = ledger(store)
    ids = await queue_many(agg, 50)
    runner = ProjectionRunner(store, REQUESTS, page_size=20)

    async def die(conn: asyncpg.Connection) -> None:
        if runner.position >= 20:  # the second chunk is applied but not committed
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    runner.before_commit = die
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
        await runner.catch_up()
    assert (await queries.summary(store.pool)).pending_batching == 20
    await run_batch(agg, "b1", ids[:10])
    await ProjectionRunner(store, REQUESTS, page_size=20).catch_up()
    summary = await queries.summary(store.pool)
    assert summary.pending_batching == 40
    assert summary.processing_complete == 10
    assert await store.pool.fetchval("SELECT count(*) FROM requests") == 50


async def build_history(
    store: EventStore, *, batches: int, size: int, tick: timedelta | None = None
) -> None:
    """`tick`: how far the ledger's clock moves per event (default a millisecond)."""
    agg = ledger(store)
    if tick is not None:
        ticks = itertools.count()
        agg = Ledger(store, clock=lambda: START + tick * next(ticks), new_id=uuid7)
    for b in range(batches):
        ids = await queue_many(agg, size, company=f"co{b % 3}", prefix=f"b{b}r")
        await run_batch(agg, f"b{b}", ids, fail_every=4, retryable=b % 2 == 0)
        if b % 3 == 0:
            await requeue_failed(agg, ids)


async def table_rows(store: EventStore, table: str, key: str) -> list[tuple[object, ...]]:
    rows = await store.pool.fetch(f"SELECT * FROM {table} ORDER BY {key}")
    return [tuple(r.values()) for r in rows]


TABLES = [
    ("requests", "request_id"),
    ("request_status_counts", "company_id, status"),
    ("session_analyses", "request_id"),
    ("batches", "batch_id"),
    ("request_hours", "company_id, hour"),
    ("request_days", "day"),
]


@pytest.mark.slow
async def test_rebuild_of_a_100k_event_history_equals_the_live_tables_row_for_row(
    store: EventStore,
) -> None:
    await build_history(store, batches=16, size=2_000)
    assert await store.head() >= 100_000
    await catch_up(store)
    live = {t: await table_rows(store, t, k) for t, k in TABLES}
    assert len(live["requests"]) == 32_000
    for projection in (REQUESTS, BATCHES):
        await rebuild(store, projection)
    rebuilt = {t: await table_rows(store, t, k) for t, k in TABLES}
    for t, _ in TABLES:
        assert rebuilt[t] == live[t], t


async def test_rebuild_that_writes_out_rows_midway_still_equals_the_live_tables(
    store: EventStore,
) -> None:
    # A limit of 25 rows makes the replay write its rows out many times and load them
    # back when a later event (batching, completion, requeue) touches them.
    # Ten minutes an event: the requests are queued over several UTC days.
    await build_history(store, batches=4, size=60, tick=timedelta(minutes=10))
    await catch_up(store)
    live = {t: await table_rows(store, t, k) for t, k in TABLES}
    assert len(live["request_days"]) >= 3
    await rebuild(store, [REQUESTS, BATCHES], page_size=97, max_rows=25)
    rebuilt = {t: await table_rows(store, t, k) for t, k in TABLES}
    for t, _ in TABLES:
        assert rebuilt[t] == live[t], t
    finished = await store.pool.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'PROCESSING_COMPLETE') AS completed,"
        " count(*) FILTER (WHERE status = 'PROCESSING_FAILED') AS failed,"
        " sum(cost_micro_usd) AS cost FROM requests"
    )
    hours = await store.pool.fetchrow(
        "SELECT sum(completed) AS completed, sum(failed) AS failed,"
        " sum(cost_micro_usd) AS cost FROM request_hours"
    )
    assert finished["failed"] > 0  # requeued failures left their hour; the rest stayed
    assert tuple(hours.values()) == tuple(finished.values())


async def test_reads_answer_from_the_old_tables_during_a_rebuild_and_switch_at_the_swap(
    store: EventStore,
) -> None:
    agg = ledger(store)
    await queue_many(agg, 30)
    await catch_up(store)
    await store.pool.execute("UPDATE request_status_counts SET n = 999")  # drift the live table
    paused, resume = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        paused.set()
        await resume.wait()

    task = asyncio.create_task(rebuild(store, REQUESTS, page_size=7, before_swap=hold))
    await paused.wait()
    assert (await queries.summary(store.pool)).pending_batching == 999
    await queue_many(agg, 5, prefix="late")  # arrives between the replay and the swap
    resume.set()
    await task
    assert (await queries.summary(store.pool)).pending_batching == 35


async def test_live_runner_continues_on_the_swapped_tables(store: EventStore) -> None:
    agg = ledger(store)
    await queue_many(agg, 10)
    stop = asyncio.Event()
    runner = ProjectionRunner(store, REQUESTS, poll_interval=0.05)
    task = asyncio.create_task(runner.run(stop))

    async def settled(n: int) -> None:
        for _ in range(200):
            if await store.pool.fetchval("SELECT count(*) FROM requests") == n:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"requests never reached {n}")

    await settled(10)
    await rebuild(store, REQUESTS)
    await queue_many(agg, 5, prefix="after")
    await settled(15)
    stop.set()
    await task
    assert (await queries.summary(store.pool)).pending_batching == 15


async def test_an_interrupted_rebuild_leaves_the_live_tables_in_use(store: EventStore) -> None:
    agg = ledger(store)
    await queue_many(agg, 10)
    await catch_up(store)

    async def crash() -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        await rebuild(store, REQUESTS, before_swap=crash)
    assert (await queries.summary(store.pool)).pending_batching == 10
    assert await rebuild(store, REQUESTS) == await store.head()


async def test_a_runner_whose_chunk_fails_logs_it_and_carries_on(store: EventStore) -> None:
    agg = ledger(store)
    await queue_many(agg, 5)
    runner = ProjectionRunner(store, REQUESTS, poll_interval=0.05)
    failures = []

    async def fail_once(conn: asyncpg.Connection) -> None:
        if not failures:
            failures.append(1)
            raise RuntimeError("transient")

    runner.before_commit = fail_once
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    async with asyncio.timeout(10):
        while await store.pool.fetchval("SELECT count(*) FROM requests") != 5:
            await asyncio.sleep(0.05)
    stop.set()
    await task
    assert failures == [1]


def test_rebuild_and_status_commands_report_events_rows_and_lag(
    db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.entrypoints.cli import main

    async def history() -> None:
        store = await EventStore.open(db_dsn)
        try:
            await build_history(store, batches=2, size=30)
        finally:
            await store.close()

    asyncio.run(history())
    assert main(["projections", "rebuild", "--max-rows", "10", "--database-url", db_dsn]) == 0
    rebuilt = capsys.readouterr().out
    assert main(["projections", "status", "--database-url", db_dsn]) == 0
    status = capsys.readouterr().out
    assert "rebuilt requests, batches:" in rebuilt
    assert "requests=60" in status
    assert "batches=2" in status
    assert status.count("lag=0 ") == 2
    assert main(["projections", "rebuild", "nothing", "--database-url", db_dsn]) == 2
    assert "unknown projection(s): nothing" in capsys.readouterr().err


def test_status_command_on_a_database_nothing_migrated_reports_empty_projections(
    empty_db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.entrypoints.cli import main

    assert main(["projections", "status", "--database-url", empty_db_dsn]) == 0
    out = capsys.readouterr().out
    assert "requests     checkpoint=0" in out
    assert "requests=0" in out


def test_rebuild_command_refuses_a_row_limit_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    from service.entrypoints.cli import main

    with pytest.raises(SystemExit) as info:
        main(["projections", "rebuild", "--max-rows", "0"])
    assert info.value.code == 2
    assert "expected a whole number above 0, got '0'" in capsys.readouterr().err


def test_rebuild_help_states_the_row_limit_the_rebuild_uses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from projections.rebuild import MAX_ROWS
    from service.entrypoints.cli import main

    with pytest.raises(SystemExit):
        main(["projections", "--help"])
    assert f"default {MAX_ROWS:,}" in " ".join(capsys.readouterr().out.split())


class _Broken:
    """A projection whose chunks always fail."""

    name = "broken-for-test"
    tables: tuple[str, ...] = ()
    categories = ("request",)

    async def apply(self, conn: object, tables: object, events: object) -> None:
        raise RuntimeError("boom")

    async def resume(self, conn: object, tables: object) -> None:
        """Nothing to repair."""

    def replay(self) -> object:
        raise NotImplementedError


async def test_a_failing_projection_runner_logs_the_failure_as_json_and_keeps_trying(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import json

    from service.logs import configure

    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    configure("INFO", "json")
    await queue_many(ledger(store), 1, prefix="broken")
    runner = ProjectionRunner(store, _Broken(), poll_interval=0.05)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        async with asyncio.timeout(10):
            while err.getvalue().count("projection.runner_failed") < 2:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
    first = json.loads(err.getvalue().splitlines()[0])
    assert (first["event"], first["component"], first["projection"]) == (
        "projection.runner_failed",
        "projections",
        "broken-for-test",
    )
    assert "RuntimeError: boom" in first["exception"]


async def test_the_request_hours_migration_counts_the_requests_finished_before_it(
    store: EventStore,
) -> None:
    """An upgraded database gets `request_hours` from its finished requests, as the
    projection would have kept it (the projection only adds changes from then on)."""
    await build_history(store, batches=3, size=20)
    await catch_up(store)
    kept = await table_rows(store, "request_hours", "company_id, hour")
    assert kept
    await store.pool.execute("TRUNCATE request_hours")  # as just before the migration
    migration = Path(projections.__file__).parent / "sql" / "0002_console_indexes.sql"
    await store.pool.execute(migration.read_text())
    assert await table_rows(store, "request_hours", "company_id, hour") == kept


async def test_a_runner_taking_the_lead_counts_the_days_an_older_version_left_out(
    store: EventStore,
) -> None:
    """A rolling upgrade: after migration 0004 an older `serve` still projected requests
    without counting their days; the first runner of this version counts them."""
    runner = ProjectionRunner(store, RequestsProjection(), poll_interval=0.05)
    led = ledger(store)
    await queue_many(led, 30, prefix="before-")
    await runner.catch_up()
    counted = await store.pool.fetch("SELECT * FROM request_days ORDER BY day")
    await queue_many(led, 30, prefix="older-")
    await runner.catch_up()
    # As the older version left it: its requests projected, their days not counted.
    await store.pool.execute("TRUNCATE request_days")
    await store.pool.executemany(
        "INSERT INTO request_days VALUES ($1, $2, $3)", [tuple(r) for r in counted]
    )
    top = "SELECT max(max_seq) FROM request_days"
    assert await store.pool.fetchval(top) == 30
    stop = asyncio.Event()
    task = asyncio.ensure_future(runner.run(stop))
    try:
        async with asyncio.timeout(10):
            while await store.pool.fetchval(top) < 60:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
    whole = await store.pool.fetch(
        "SELECT (queued_at AT TIME ZONE 'UTC')::date, min(seq), max(seq)"
        " FROM requests GROUP BY 1 ORDER BY 1"
    )
    days = await store.pool.fetch("SELECT * FROM request_days ORDER BY day")
    assert [tuple(r) for r in days] == [tuple(r) for r in whole]
