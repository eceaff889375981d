"""The event log contract, on PostgreSQL and in memory, then PostgreSQL specifics (DESIGN §3)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest

from eventstore import (
    ConcurrencyError,
    DuplicateEventError,
    EventLog,
    EventMetadata,
    EventStore,
    InMemoryEventStore,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    WriterBusy,
)
from eventstore.listener import Listener
from eventstore.store import WRITER_LOCK_KEY, _filters, _scoped

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def ev(
    kind: str = "Thing", n: int = 0, *, actor: str = "system", event_id: uuid.UUID | None = None
) -> NewEvent:
    return NewEvent(
        id=event_id or uuid.uuid4(),
        type=kind,
        data=msgspec.json.encode({"n": n}),
        metadata=EventMetadata(occurred_at=T0, actor=actor, correlation_id="corr-1"),
    )


@pytest.fixture(params=["postgres", "memory"])
def log(request: pytest.FixtureRequest) -> EventLog:
    """Each implementation of the port in turn: the contract tests below run on both."""
    if request.param == "postgres":
        store: EventStore = request.getfixturevalue("store")
        return store
    return InMemoryEventStore()


async def count(log: EventLog) -> int:
    """Every stored event, counted through the port."""
    return len(await log.read_all(0, 10_000))


async def count_rows(store: EventStore) -> int:
    return int(await store.pool.fetchval("SELECT count(*) FROM events"))


# The contract of the EventLog port: PostgreSQL and in memory alike.


async def test_append_then_read_stream_returns_events_in_version_order(log: EventLog) -> None:
    await log.append("thing-1", 0, [ev(n=1), ev(n=2)])
    await log.append("thing-1", 2, [ev(n=3)])
    events = await log.read_stream("thing-1")
    assert [e.version for e in events] == [1, 2, 3]
    assert [msgspec.json.decode(e.data)["n"] for e in events] == [1, 2, 3]
    assert [e.version for e in await log.read_stream("thing-1", after_version=1)] == [2, 3]
    assert [e.version for e in await log.read_stream("thing-1", after_version=1, limit=1)] == [2]


async def test_metadata_round_trips_with_actor_correlation_and_occurred_at(log: EventLog) -> None:
    sent = ev(actor="alice")
    await log.append("thing-1", None, [sent])
    (got,) = await log.read_stream("thing-1")
    assert got.id == sent.id
    assert got.metadata == sent.metadata
    assert got.category == "thing"


async def test_no_expected_version_appends_whatever_version_the_stream_is_at(
    log: EventLog,
) -> None:
    await log.append("thing-1", None, [ev(n=1)])
    await log.append("thing-1", None, [ev(n=2)])
    assert [e.version for e in await log.read_stream("thing-1")] == [1, 2]
    assert await log.stream_version("thing-1") == 2


async def test_stale_expected_version_raises_conflict_and_writes_nothing(log: EventLog) -> None:
    await log.append("thing-1", 0, [ev()])
    with pytest.raises(ConcurrencyError) as info:
        await log.append("thing-1", 0, [ev(), ev()])
    assert info.value.conflicts[0].stream_id == "thing-1"
    assert (info.value.conflicts[0].expected, info.value.conflicts[0].actual) == (0, 1)
    assert await count(log) == 1


async def test_expected_version_ahead_of_the_stream_is_a_conflict(log: EventLog) -> None:
    with pytest.raises(ConcurrencyError):
        await log.append("thing-1", 3, [ev()])
    assert await count(log) == 0


# On PostgreSQL a small append takes a multi-row INSERT, a large one COPY.
@pytest.mark.parametrize("streams", [3, 400], ids=["small-append", "large-append"])
async def test_conflict_on_one_stream_among_many_writes_nothing_of_the_call(
    log: EventLog, streams: int
) -> None:
    await log.append("thing-2", 0, [ev()])
    appends = [StreamAppend(f"thing-{i}", 0, [ev(n=i)]) for i in range(1, streams + 1)]
    with pytest.raises(ConcurrencyError) as info:
        await log.append_many(appends)
    assert [c.stream_id for c in info.value.conflicts] == ["thing-2"]
    assert await count(log) == 1
    assert await log.head() == 1


async def test_conflict_lists_every_stale_stream_of_the_call(log: EventLog) -> None:
    await log.append("thing-1", 0, [ev()])
    await log.append("thing-3", 0, [ev(), ev()])
    appends = [StreamAppend(f"thing-{i}", 0, [ev(n=i)]) for i in range(1, 5)]
    with pytest.raises(ConcurrencyError) as info:
        await log.append_many(appends)
    assert [(c.stream_id, c.expected, c.actual) for c in info.value.conflicts] == [
        ("thing-1", 0, 1),
        ("thing-3", 0, 2),
    ]
    assert await count(log) == 3


@pytest.mark.parametrize("streams", [3, 400], ids=["small-append", "large-append"])
async def test_append_many_is_atomic_and_numbers_positions_without_gaps(
    log: EventLog, streams: int
) -> None:
    appends = [StreamAppend(f"thing-{i}", 0, [ev(n=i), ev(n=i)]) for i in range(streams)]
    last = await log.append_many(appends)
    assert last == 2 * streams
    page = await log.read_all(0, 10_000)
    assert [e.position for e in page] == list(range(1, 2 * streams + 1))
    assert await log.stream_versions(["thing-0", "thing-9999"]) == {"thing-0": 2, "thing-9999": 0}


async def test_read_streams_returns_every_requested_stream_in_version_order(
    log: EventLog,
) -> None:
    await log.append_many(
        [
            StreamAppend("thing-2", 0, [ev(n=1)]),
            StreamAppend("thing-1", 0, [ev(n=2), ev(n=3)]),
            StreamAppend("thing-2", None, [ev(n=4)]),
        ]
    )
    streams = await log.read_streams(["thing-1", "thing-2", "thing-3"])
    assert {sid: [(e.version, e.position) for e in es] for sid, es in streams.items()} == {
        "thing-1": [(1, 2), (2, 3)],
        "thing-2": [(1, 1), (2, 4)],
        "thing-3": [],
    }
    assert await log.stream_version("thing-2") == 2
    assert await log.stream_version("thing-3") == 0


async def test_reappending_a_stored_event_id_never_stores_a_second_copy(log: EventLog) -> None:
    first = ev()
    await log.append("thing-1", None, [first])
    with pytest.raises(DuplicateEventError) as info:
        await log.append("thing-1", None, [first])
    assert info.value.event_ids == [first.id]
    with pytest.raises(DuplicateEventError):
        await log.append_many(
            [StreamAppend("thing-2", None, [ev()]), StreamAppend("thing-3", None, [first])]
        )
    many = [StreamAppend(f"bulk-{i}", None, [ev()]) for i in range(300)] + [
        StreamAppend("thing-4", None, [first])
    ]
    with pytest.raises(DuplicateEventError):
        await log.append_many(many)
    assert await count(log) == 1


async def test_the_same_event_id_twice_in_one_append_is_rejected(log: EventLog) -> None:
    e = ev()
    with pytest.raises(DuplicateEventError) as info:
        await log.append("thing-1", None, [e, e])
    assert info.value.event_ids == [e.id]
    assert await count(log) == 0


async def test_read_all_pages_by_position_and_filters_by_type_and_category(log: EventLog) -> None:
    await log.append("request-1", 0, [ev("RequestQueued"), ev("RequestBatched")])
    await log.append("batch-1", 0, [ev("BatchPlanned")])
    await log.append("request-2", 0, [ev("RequestQueued")])
    first = await log.read_all(0, 2)
    second = await log.read_all(first[-1].position, 2)
    assert [e.position for e in first + second] == [1, 2, 3, 4]
    queued = await log.read_all(0, 100, types=["RequestQueued"])
    assert [(e.stream_id, e.type) for e in queued] == [
        ("request-1", "RequestQueued"),
        ("request-2", "RequestQueued"),
    ]
    batches = await log.read_all(0, 100, categories=["batch"])
    assert [e.stream_id for e in batches] == ["batch-1"]
    assert await log.read_all(4, 100) == []


# In memory only: the clock is the store's.


async def test_read_all_by_scope_returns_only_those_scopes_in_position_order(
    log: EventLog,
) -> None:
    await log.append_many(
        [
            StreamAppend("thing-a1", 0, [ev(n=1), ev(n=2)], scope="acme"),
            StreamAppend("thing-g1", 0, [ev(n=3)], scope="globex"),
            StreamAppend("thing-i1", 0, [ev(n=4)], scope="initech"),
        ]
    )
    await log.append("thing-a1", 2, [ev(n=5)], scope="acme")
    await log.append("thing-u1", 0, [ev(n=6)])  # no scope
    everything = await log.read_all(0, 100)
    assert [e.scope for e in everything] == ["acme", "acme", "globex", "initech", "acme", None]
    acme = await log.read_all(0, 100, scopes=["acme"])
    assert [e.position for e in acme] == [1, 2, 5]
    both = await log.read_all(0, 100, scopes=["initech", "acme"])
    assert [e.position for e in both] == [1, 2, 4, 5]
    assert [e.position for e in await log.read_all(1, 2, scopes=["acme", "initech"])] == [2, 4]
    assert [e.position for e in await log.read_all(0, 100, scopes=["acme"], types=["X"])] == []
    assert await log.read_all(0, 100, scopes=[]) == []
    assert await log.read_all(0, 100, scopes=["umbrella"]) == []
    assert [e.scope for e in await log.read_stream("thing-a1")] == ["acme"] * 3


async def test_memory_store_records_events_at_the_time_its_clock_gives() -> None:
    memory = InMemoryEventStore(clock=lambda: T0)
    await memory.append("thing-1", 0, [ev(), ev()])
    assert [e.recorded_at for e in await memory.read_all()] == [T0, T0]


async def test_an_append_nobody_waited_for_counts_no_writer_lock_wait(log: EventLog) -> None:
    await log.append("thing-1", 0, [ev()])
    await log.append_many([StreamAppend("thing-2", 0, [ev()]), StreamAppend("thing-3", 0, [ev()])])
    stats = log.writer_lock
    assert (stats.waits, stats.timeouts, stats.wait_seconds) == (0, 0, 0.0)
    assert stats.buckets()[-1] == (float("inf"), 0)


# PostgreSQL only: transactions, subscriptions, the tail window, migrations.


async def test_append_inside_a_callers_transaction_rolls_back_with_it(store: EventStore) -> None:
    async with store.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await store.append("thing-1", 0, [ev()], conn=conn)
        await tx.rollback()
    assert await count_rows(store) == 0


async def collect(sub_iter: object, into: list[RecordedEvent]) -> None:
    async for event in sub_iter:  # type: ignore[attr-defined]
        into.append(event)


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_subscription_catches_up_then_follows_live(store: EventStore) -> None:
    await store.append("thing-1", 0, [ev(n=1), ev(n=2)])
    got: list[RecordedEvent] = []
    async with store.subscribe(after=1, page_size=1, poll_interval=30) as sub:
        task = asyncio.create_task(collect(sub, got))

        async def caught_up() -> bool:
            return len(got) == 1

        await wait_for(caught_up)
        await store.append("thing-2", 0, [ev(n=3)])  # delivered by NOTIFY: polling is 30 s away

        async def live() -> bool:
            return len(got) == 2

        await wait_for(live, timeout=5)
        task.cancel()
    assert [e.position for e in got] == [2, 3]


async def test_subscriber_never_skips_an_event_whose_transaction_commits_late(
    store: EventStore,
) -> None:
    """Guarantee 3: hold a writer open while later writers try to commit; nothing is skipped."""
    got: list[RecordedEvent] = []
    async with store.subscribe(after=0, poll_interval=0.02) as sub:
        task = asyncio.create_task(collect(sub, got))
        slow = ev(n=1)
        async with store.pool.acquire() as held:
            tx = held.transaction()
            await tx.start()
            await store.append_many([StreamAppend("thing-slow", 0, [slow])], conn=held)
            later = [
                asyncio.create_task(store.append(f"thing-fast-{i}", 0, [ev(n=2 + i)]))
                for i in range(2)
            ]

            async def later_writers_settled() -> bool:
                done = all(t.done() for t in later)
                waiting = await store.pool.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted"
                )
                return done or waiting >= 2

            await wait_for(later_writers_settled)
            await asyncio.sleep(0.3)  # the subscriber polls many times while the first is open
            await tx.commit()
        await asyncio.gather(*later)

        async def all_three() -> bool:
            return len(got) >= 3

        await wait_for(all_three, timeout=5)
        task.cancel()
    assert got[0].id == slow.id
    assert [e.position for e in got] == [1, 2, 3]
    resumed = [
        e async for e in _take(store.subscribe(after=got[1].position, poll_interval=0.02), 1)
    ]
    assert [e.position for e in resumed] == [3]


async def _take(sub, n: int):  # type: ignore[no-untyped-def]
    async with sub:
        taken = 0
        async for event in sub:
            yield event
            taken += 1
            if taken == n:
                return


async def listener_pids(store: EventStore) -> list[int]:
    rows = await store.pool.fetch(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    return [r[0] for r in rows]


async def test_subscriber_whose_listen_connection_is_killed_still_receives_later_events(
    store: EventStore,
) -> None:
    """Guarantee 4: a lost LISTEN connection slows delivery at most to the poll interval."""
    got: list[RecordedEvent] = []
    async with store.subscribe(after=0, poll_interval=0.2) as sub:
        task = asyncio.create_task(collect(sub, got))

        async def listening() -> bool:
            return len(await listener_pids(store)) == 1

        await wait_for(listening)
        (old_pid,) = await listener_pids(store)
        assert await store.pool.fetchval("SELECT pg_terminate_backend($1)", old_pid)
        await store.append("thing-1", 0, [ev(n=1)])
        await store.append("thing-2", 0, [ev(n=2)])

        async def delivered() -> bool:
            return len(got) == 2

        await wait_for(delivered, timeout=5)

        async def relistening() -> bool:
            pids = await listener_pids(store)
            return len(pids) == 1 and pids[0] != old_pid

        await wait_for(relistening, timeout=10)
        assert sub.reconnects >= 1
        task.cancel()
    assert [e.position for e in got] == [1, 2]


async def test_subscriptions_of_one_store_share_one_listen_connection_and_are_woken_by_it(
    store: EventStore,
) -> None:
    # A poll interval far longer than the test: only the shared NOTIFY can deliver in time.
    subs = [store.subscribe(after=0, poll_interval=60) for _ in range(20)]
    got: list[list[RecordedEvent]] = [[] for _ in subs]
    tasks = [asyncio.create_task(collect(s, g)) for s, g in zip(subs, got, strict=True)]

    async def listening() -> bool:
        return all(s.listening for s in subs)

    await wait_for(listening)
    await asyncio.sleep(0.1)  # every subscription is now waiting on the wake-up
    assert len(await listener_pids(store)) == 1
    await store.append("thing-1", 0, [ev(n=1), ev(n=2)])

    async def delivered() -> bool:
        return all(len(g) == 2 for g in got)

    await wait_for(delivered, timeout=5)
    for t in tasks:
        t.cancel()
    for s in subs:
        await s.close()
    assert {tuple(e.position for e in g) for g in got} == {(1, 2)}


async def test_live_subscriptions_share_one_read_of_each_new_event(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    read_all = store.read_all

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return await read_all(*args, **kwargs)

    monkeypatch.setattr(store, "read_all", counted)
    subs = [store.subscribe(after=0, poll_interval=60) for _ in range(20)]
    got: list[list[RecordedEvent]] = [[] for _ in subs]
    tasks = [asyncio.create_task(collect(s, g)) for s, g in zip(subs, got, strict=True)]
    await asyncio.sleep(0.2)
    for n in range(1, 11):
        await store.append(f"thing-{n}", 0, [ev(n=n)])

        async def everyone_has_it(n: int = n) -> bool:
            return all(len(g) == n for g in got)

        await wait_for(everyone_has_it, timeout=5)
    for t in tasks:
        t.cancel()
    for s in subs:
        await s.close()
    assert {tuple(e.position for e in g) for g in got} == {tuple(range(1, 11))}
    # One first read each before the window opens, then about one per append; each
    # subscription reading for itself would make at least 20 x 10.
    assert reads <= 40


@pytest.mark.parametrize(
    "limits",
    [{"tail_capacity": 5}, {"tail_max_bytes": 5 * len(b'{"n":10}')}],
    ids=["by-count", "by-bytes"],
)
async def test_a_subscription_left_behind_by_the_tail_window_reads_the_rest_from_the_log(
    db_dsn: str, limits: dict[str, int]
) -> None:
    store = await EventStore.open(db_dsn, **limits)
    try:
        follower = store.subscribe(after=0, poll_interval=0.05)  # keeps the window moving
        followed: list[RecordedEvent] = []
        follow = asyncio.create_task(collect(follower, followed))
        slow = store.subscribe(after=0, page_size=3, poll_interval=0.05)
        await asyncio.sleep(0.2)
        await store.append("thing-0", 0, [ev(n=0)])
        first = await slow.next_page()
        for n in range(1, 31):
            await store.append(f"thing-{n}", 0, [ev(n=n)])

        async def window_moved_on() -> bool:
            return len(followed) == 31

        await wait_for(window_moved_on)
        assert store.tail.after(first[-1].position, 3) is None, "position 1 left the window"
        rest: list[RecordedEvent] = []
        while len(rest) < 30:
            rest += await slow.next_page()
        follow.cancel()
        await follower.close()
        await slow.close()
    finally:
        await store.close()
    assert [e.position for e in first + rest] == list(range(1, 32))


async def test_a_scoped_subscription_follows_only_its_scopes_live_and_from_the_log(
    store: EventStore,
) -> None:
    for i in range(3):
        await store.append(f"thing-a{i}", 0, [ev(n=i)], scope="acme")
        await store.append(f"thing-g{i}", 0, [ev(n=i)], scope="globex")
    seen: list[RecordedEvent] = []
    async with store.subscribe(0, scopes=["globex"], page_size=2, poll_interval=0.05) as sub:
        while len(seen) < 3:
            seen += await sub.next_page()
        await store.append("thing-a9", 0, [ev(n=9)], scope="acme")
        await store.append("thing-g9", 0, [ev(n=9)], scope="globex")
        while len(seen) < 4:
            seen += await sub.next_page()
    assert [e.stream_id for e in seen] == ["thing-g0", "thing-g1", "thing-g2", "thing-g9"]
    assert {e.scope for e in seen} == {"globex"}


async def test_scoped_reads_use_the_scope_index_not_a_scan_of_the_log(store: EventStore) -> None:
    await store.append_many(
        [StreamAppend(f"thing-{i}", 0, [ev(n=i)], scope=f"co{i % 50}") for i in range(2000)]
    )
    async with store.pool.acquire() as conn:
        await conn.execute("ANALYZE events")
        await conn.execute("SET enable_seqscan = off")  # tiny tables: judge the plan's shape
        where, args = _filters(10, None, None)
        rows = await conn.fetch(f"EXPLAIN {_scoped(where, len(args))}", *args, 100, ["co7", "co9"])
        plan = "\n".join(r[0] for r in rows)
    assert "events_scope_position" in plan


async def test_migrate_twice_applies_nothing_the_second_time(db_dsn: str) -> None:
    from service.adapters.database import migrate, pending

    assert await migrate(db_dsn) == []
    assert await pending(db_dsn) == []


async def test_migrate_refuses_a_migration_edited_after_it_was_applied(db_dsn: str) -> None:
    from eventstore.migrations import Migration, MigrationError, apply_migrations
    from service.adapters.database import all_migrations

    edited = [Migration(m.name, m.sql + "\n-- edited") for m in all_migrations()]
    conn = await asyncpg.connect(db_dsn)
    try:
        with pytest.raises(MigrationError):
            await apply_migrations(conn, edited)
    finally:
        await conn.close()


# The writer lock's bounded wait: a stuck writer transaction must not freeze every writer.


@pytest.fixture
async def quick_store(db_dsn: str) -> AsyncIterator[EventStore]:
    """A store whose appends wait at most 0.2 s for the writer lock."""
    es = await EventStore.open(db_dsn, max_size=4, writer_lock_timeout=0.2)
    yield es
    await es.close()


@contextlib.asynccontextmanager
async def writer_lock_held(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """The writer lock, held by another session (as a stuck writer would) until the block ends."""
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", WRITER_LOCK_KEY)
        yield holder
    finally:
        await holder.close()  # ends the session, and with it the lock


async def an_append_waits_for_the_writer_lock(store: EventStore) -> None:
    async def waiting() -> bool:
        n = await store.pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        return bool(n)

    await wait_for(waiting)


async def test_append_while_another_session_holds_the_writer_lock_raises_writer_busy(
    quick_store: EventStore, db_dsn: str
) -> None:
    store = quick_store
    big = [ev(n=i) for i in range(300)]  # past the COPY threshold: the multi-statement path
    async with writer_lock_held(db_dsn):
        async with asyncio.timeout(10):  # it gives up; it does not wait forever
            with pytest.raises(WriterBusy) as one:
                await store.append("thing-1", 0, [ev()])  # the one-round-trip path
            with pytest.raises(WriterBusy):
                await store.append_many([StreamAppend("thing-2", 0, [ev()])])
            with pytest.raises(WriterBusy):
                await store.append("thing-3", 0, big)
    assert one.value.timeout == 0.2
    assert "not free within 0.2 s" in str(one.value)
    assert "can be retried" in str(one.value)
    assert await count_rows(store) == 0
    stats = store.writer_lock
    assert (stats.waits, stats.timeouts) == (3, 3)
    assert stats.wait_seconds >= 3 * 0.2  # lock_timeout never fires early
    # The lock is free again: the same appends succeed, at the versions they expected.
    await store.append("thing-1", 0, [ev()])
    await store.append_many([StreamAppend("thing-2", 0, [ev()])])
    await store.append("thing-3", 0, big)
    assert await count_rows(store) == 302
    assert store.writer_lock.timeouts == 3


async def test_an_append_that_waited_for_the_writer_lock_is_counted_with_its_wait(
    store: EventStore, db_dsn: str
) -> None:
    async with writer_lock_held(db_dsn) as holder:
        append = asyncio.create_task(store.append("thing-1", 0, [ev()]))
        await an_append_waits_for_the_writer_lock(store)
        await holder.execute("SELECT pg_advisory_unlock($1)", WRITER_LOCK_KEY)
        async with asyncio.timeout(10):
            assert await append == 1
    stats = store.writer_lock
    assert (stats.waits, stats.timeouts) == (1, 0)
    assert stats.wait_seconds > 0
    assert stats.buckets()[-1] == (float("inf"), 1)
    assert [n for _, n in stats.buckets()] == sorted(n for _, n in stats.buckets())  # cumulative


async def test_a_bounded_wait_leaves_the_callers_lock_timeout_as_it_was(
    store: EventStore, db_dsn: str
) -> None:
    """The timeout bounds the lock alone, not the statements of the caller's transaction."""
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '7s'")
        async with writer_lock_held(db_dsn) as holder:
            append = asyncio.create_task(store.append("thing-1", 0, [ev()], conn=conn))
            await an_append_waits_for_the_writer_lock(store)
            await holder.execute("SELECT pg_advisory_unlock($1)", WRITER_LOCK_KEY)
            async with asyncio.timeout(10):
                await append
        assert await conn.fetchval("SELECT current_setting('lock_timeout')") == "7s"
    assert store.writer_lock.waits == 1


async def test_a_writer_busy_inside_a_callers_transaction_leaves_it_usable(
    quick_store: EventStore, db_dsn: str
) -> None:
    store = quick_store
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute("CREATE TEMP TABLE seen (n int) ON COMMIT DROP")
        async with writer_lock_held(db_dsn):
            with pytest.raises(WriterBusy):
                async with asyncio.timeout(10):
                    await store.append("thing-1", 0, [ev()], conn=conn)
        await conn.execute("INSERT INTO seen VALUES (1)")  # not an aborted transaction
        assert await conn.fetchval("SELECT current_setting('lock_timeout')") == "0"
        await store.append("thing-1", 0, [ev()], conn=conn)
    assert await count_rows(store) == 1


async def test_a_writer_lock_timeout_of_zero_or_less_is_refused(store: EventStore) -> None:
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="writer_lock_timeout"):
            EventStore(store.pool, store.dsn, writer_lock_timeout=bad)


async def test_a_closed_listener_never_connects_again(store: EventStore) -> None:
    """A subscription left running after its store closed (a leaked task) must not hold a
    LISTEN connection: it would outlive its store and wake on another's database."""
    listener = Listener(store.dsn)
    connecting = asyncio.create_task(listener.ensure())
    await listener.close()  # while the first connect is under way
    await connecting
    await listener.ensure()  # and afterwards
    assert not listener.listening
    assert await listener_pids(store) == []
