"""Event store suites: batched and single appends, reading the whole log, live fan-out."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from statistics import median

import msgspec

from eventstore import EventMetadata, EventStore, NewEvent, StreamAppend, Subscription
from service.ids import uuid7
from service.tools.bench.core import Bench, Result, suite, with_baseline


def _event(n: int) -> NewEvent:
    meta = EventMetadata(occurred_at=datetime.now(UTC), actor="bench", correlation_id=f"c-{n}")
    payload = {"request_id": f"r{n}", "company_id": "acme", "model": "gpt-4o-mini", "attempt": 1}
    # The ids the service writes (time-ordered UUIDv7), so the event-id index sees the
    # same insert pattern as in production.
    return NewEvent(uuid7(), "RequestQueued", msgspec.json.encode(payload), meta)


_BARE = """CREATE TABLE IF NOT EXISTS {name} (position bigint, stream_id text,
 stream_version int, event_id uuid, event_type text, data jsonb, metadata jsonb, scope text)"""
_COLUMNS = [
    "position",
    "stream_id",
    "stream_version",
    "event_id",
    "event_type",
    "data",
    "metadata",
    "scope",
]
Rows = list[tuple[int, str, int, object, str, bytes, bytes, str | None]]


@suite("append_batched")
async def append_batched(b: Bench) -> list[Result]:
    """Events/s appending many streams per call with version checks vs raw COPY of the rows.

    Two baselines: `copy_raw`, COPY into a bare table, and `copy_keyed`, COPY into a
    table with the log's own keys and indexes (what any append must at least pay). Each
    runs three times, alternating with ours, and reports its median: on a small machine
    a checkpoint or another process lands in one run now and then and would decide a ratio.
    """
    streams, per_stream, rounds = b.size(10_000, 1_000), 20, b.size(3, 1)
    total = streams * per_stream
    rates: dict[str, list[float]] = {"ours": [], "copy_raw": [], "copy_keyed": []}
    async with b.store.pool.acquire() as conn:
        await conn.execute(_BARE.format(name="copy_raw"))
        await conn.execute("CREATE TABLE copy_keyed (LIKE events INCLUDING ALL)")
        for r in range(rounds):
            chunks = _stream_chunks(f"bench{r}", streams, per_stream, chunk_streams=1_000)
            raw_chunks = _raw_rows(chunks, first_position=r * total + 1)
            t = time.perf_counter()
            for chunk in chunks:
                await b.store.append_many(chunk)
            rates["ours"].append(total / (time.perf_counter() - t))
            for table in ("copy_raw", "copy_keyed"):
                t = time.perf_counter()
                for rows in raw_chunks:
                    async with conn.transaction():
                        await conn.copy_records_to_table(table, records=rows, columns=_COLUMNS)
                rates[table].append(total / (time.perf_counter() - t))
    ours = median(rates["ours"])
    return [
        with_baseline("append_batched", ours, "events/s", "copy_raw", median(rates["copy_raw"])),
        with_baseline(
            "append_batched_keyed", ours, "events/s", "copy_keyed", median(rates["copy_keyed"])
        ),
    ]


def _raw_rows(chunks: list[list[StreamAppend]], *, first_position: int) -> list[Rows]:
    """The rows the log stores for these appends, numbered and encoded ahead of time."""
    enc, position, out = msgspec.json.encode, first_position, []
    for chunk in chunks:
        rows: Rows = []
        for a in chunk:
            for version, e in enumerate(a.events, start=1):
                rows.append(
                    (position, a.stream_id, version, e.id, e.type, e.data, enc(e.metadata), a.scope)
                )
                position += 1
        out.append(rows)
    return out


def _stream_chunks(
    prefix: str, streams: int, per_stream: int, *, chunk_streams: int
) -> list[list[StreamAppend]]:
    """New streams `prefix-N` of `per_stream` events each, `chunk_streams` per append."""
    return [
        [
            StreamAppend(
                f"{prefix}-{i}",
                0,
                [_event(i * per_stream + j) for j in range(per_stream)],
                scope=f"co{i % 20}",  # as the service stores them: a company per stream
            )
            for i in range(start, min(start + chunk_streams, streams))
        ]
        for start in range(0, streams, chunk_streams)
    ]


@suite("append_single")
async def append_single(b: Bench) -> list[Result]:
    """Events/s, one event per transaction from 4 writers, vs a bare one-row INSERT each."""
    n, writers = b.size(8_000, 2_000), 4
    events = [_event(i) for i in range(n)]

    async def ours(w: int) -> None:
        for i in range(w, n, writers):
            await b.store.append(f"single-{i}", 0, [events[i]])

    enc = msgspec.json.encode
    await b.store.pool.execute(_BARE.format(name="bench_insert_raw"))

    async def raw(w: int) -> None:
        async with b.store.pool.acquire() as conn:
            for i in range(w, n, writers):
                e = events[i]
                await conn.execute(
                    "INSERT INTO bench_insert_raw VALUES ($1, $2, 1, $3, $4, $5, $6)",
                    i,
                    f"single-{i}",
                    e.id,
                    e.type,
                    e.data,
                    enc(e.metadata),
                )

    t = time.perf_counter()
    await asyncio.gather(*(ours(w) for w in range(writers)))
    ours_rate = n / (time.perf_counter() - t)
    t = time.perf_counter()
    await asyncio.gather(*(raw(w) for w in range(writers)))
    raw_rate = n / (time.perf_counter() - t)
    return [with_baseline("append_single", ours_rate, "events/s", "insert_raw", raw_rate)]


@suite("read_all")
async def read_all(b: Bench) -> list[Result]:
    """Events/s reading and decoding the whole log by position vs fetching the raw rows."""
    streams = b.size(10_000, 1_000)
    for start in range(0, streams, 1_000):
        batch = [
            StreamAppend(f"read-{i}", None, [_event(i) for _ in range(20)])
            for i in range(start, start + 1_000)
        ]
        await b.store.append_many(batch)
    head = await b.store.head()
    decode = msgspec.json.decode
    t = time.perf_counter()
    position, seen = 0, 0
    while position < head:
        page = await b.store.read_all(position, 5_000)
        for e in page:
            decode(e.data)
        seen += len(page)
        position = page[-1].position
    ours = seen / (time.perf_counter() - t)
    t = time.perf_counter()
    position = 0
    while position < head:
        rows = await b.store.pool.fetch(
            "SELECT position, stream_id, stream_version, event_id, event_type, data, metadata,"
            " recorded_at FROM events WHERE position > $1 ORDER BY position LIMIT 5000",
            position,
        )
        position = rows[-1][0]
    raw = head / (time.perf_counter() - t)
    return [with_baseline("read_all", ours, "events/s", "fetch_raw", raw)]


@suite("fanout")
async def fanout(b: Bench) -> list[Result]:
    """Events/s delivered to 100 live subscriptions sharing the tail window vs own reads.

    The baseline runs the same subscriptions on a store whose window holds nothing, so
    each subscription reads every new event from the database itself (as before the
    window existed).
    """
    subscribers, appends = b.size(100, 20), b.size(200, 50)
    shared = await _fanout(b.store, subscribers, appends, "shared")
    alone = await EventStore.open(b.store.dsn, max_size=8, tail_capacity=0)
    try:
        own = await _fanout(alone, subscribers, appends, "own")
    finally:
        await alone.close()
    return [with_baseline("fanout", shared, "deliveries/s", "own_reads", own)]


async def _fanout(store: EventStore, subscribers: int, appends: int, prefix: str) -> float:
    """Deliveries/s while `appends` appends of 10 events reach every live subscription."""
    head, total = await store.head(), appends * 10
    subs = [store.subscribe(after=head, poll_interval=1.0) for _ in range(subscribers)]

    async def drain(sub: Subscription) -> None:
        got = 0
        while got < total:
            got += len(await sub.next_page())

    t = time.perf_counter()
    readers = [asyncio.create_task(drain(s)) for s in subs]
    for i in range(appends):
        await store.append(f"{prefix}-{i}", 0, [_event(i * 10 + j) for j in range(10)])
    await asyncio.gather(*readers)
    elapsed = time.perf_counter() - t
    for s in subs:
        await s.close()
    return subscribers * total / elapsed
