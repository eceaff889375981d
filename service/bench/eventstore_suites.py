"""Event store suites: batched and single appends, reading the whole log."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import msgspec

from eventstore import EventMetadata, NewEvent, StreamAppend
from service.bench.core import Bench, Result, suite, with_baseline


def _event(n: int) -> NewEvent:
    meta = EventMetadata(occurred_at=datetime.now(UTC), actor="bench", correlation_id=f"c-{n}")
    payload = {"request_id": f"r{n}", "company_id": "acme", "model": "gpt-4o-mini", "attempt": 1}
    return NewEvent(uuid.uuid4(), "RequestQueued", msgspec.json.encode(payload), meta)


_BARE = """CREATE UNLOGGED TABLE IF NOT EXISTS {name} (position bigint, stream_id text,
 stream_version int, event_id uuid, event_type text, data jsonb, metadata jsonb)"""


@suite("append_batched")
async def append_batched(b: Bench) -> list[Result]:
    """Events/s appending many streams per call with version checks vs raw COPY of the rows."""
    streams, per_stream = b.size(10_000, 1_000), 20
    chunk_streams = 1_000
    chunks = []
    for start in range(0, streams, chunk_streams):
        chunks.append(
            [
                StreamAppend(
                    f"bench-{i}", 0, [_event(i * per_stream + j) for j in range(per_stream)]
                )
                for i in range(start, min(start + chunk_streams, streams))
            ]
        )
    total = streams * per_stream
    t = time.perf_counter()
    for chunk in chunks:
        await b.store.append_many(chunk)
    ours = total / (time.perf_counter() - t)
    enc = msgspec.json.encode
    raw_chunks = [
        [
            (0, a.stream_id, j + 1, e.id, e.type, e.data, enc(e.metadata))
            for a in chunk
            for j, e in enumerate(a.events)
        ]
        for chunk in chunks
    ]
    async with b.store.pool.acquire() as conn:
        await conn.execute(_BARE.format(name="bench_copy_raw").replace("UNLOGGED ", ""))
        t = time.perf_counter()
        for rows in raw_chunks:
            async with conn.transaction():
                await conn.copy_records_to_table("bench_copy_raw", records=rows)
        raw = total / (time.perf_counter() - t)
    return [with_baseline("append_batched", ours, "events/s", "copy_raw", raw)]


@suite("append_single")
async def append_single(b: Bench) -> list[Result]:
    """Events/s, one event per transaction from 4 writers, vs a bare one-row INSERT each."""
    n, writers = b.size(8_000, 2_000), 4
    events = [_event(i) for i in range(n)]

    async def ours(w: int) -> None:
        for i in range(w, n, writers):
            await b.store.append(f"single-{i}", 0, [events[i]])

    enc = msgspec.json.encode
    await b.store.pool.execute(_BARE.format(name="bench_insert_raw").replace("UNLOGGED ", ""))

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
