"""`batchledger bench`: throughput suites, each measured against a baseline in the same run."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import msgspec

from eventstore import EventMetadata, EventStore, NewEvent, StreamAppend
from service.database import migrate


class Result(msgspec.Struct, frozen=True):
    """One figure; `ratio` is value / baseline_value when a baseline was measured."""

    name: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None


def with_baseline(name: str, value: float, unit: str, baseline: str, base_value: float) -> Result:
    """A result compared with its baseline."""
    return Result(
        name, value, unit, baseline, base_value, value / base_value if base_value else None
    )


class Bench:
    """A scratch database for one suite and its sizes."""

    def __init__(self, store: EventStore, quick: bool) -> None:
        self.store = store
        self.quick = quick

    def size(self, full: int, quick: int) -> int:
        """The full or --quick size."""
        return quick if self.quick else full


Suite = Callable[[Bench], Awaitable[list[Result]]]
SUITES: dict[str, Suite] = {}


def suite(name: str) -> Callable[[Suite], Suite]:
    """Register a suite under `name`."""

    def register(fn: Suite) -> Suite:
        SUITES[name] = fn
        return fn

    return register


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


@suite("decide")
async def decide(b: Bench) -> list[Result]:
    """Milliseconds to decide 50,000 request transitions, and rate vs a Machine per request."""
    from transitions import Machine

    from statemachine.commands import AssignToBatch, FailRequest
    from statemachine.request import REQUEST_MACHINE, Request, decide_many, evolve
    from statemachine.states import RequestState

    n = 50_000
    pending = [
        Request(request_id=f"r{i}", company_id="acme", session_id=f"s{i}", model="m")
        for i in range(n)
    ]
    t = time.perf_counter()
    assigned = decide_many(pending, AssignToBatch(batch_id="b1"))
    assign_ms = (time.perf_counter() - t) * 1000
    in_batch = [evolve(r, ev[0]) for r, ev in zip(pending, assigned, strict=True)]
    fail = FailRequest(batch_id="b1", code="expired", message="m", retryable=True, max_attempts=3)
    t = time.perf_counter()
    decide_many(in_batch, fail)
    fail_ms = (time.perf_counter() - t) * 1000
    sample = 2_000  # a Machine per request is what DESIGN §2 rules out; sampled, it is slow
    t = time.perf_counter()
    for _ in range(sample):
        model = type("M", (), {})()
        Machine(
            model=model,
            states=RequestState,
            transitions=[dict(x) for x in REQUEST_MACHINE.transitions],
            initial=RequestState.PENDING_BATCHING,
            auto_transitions=False,
        )
        model.assign()
    per_machine = sample / (time.perf_counter() - t)
    ours = n / (assign_ms / 1000)
    return [
        Result("decide_assign_50k", assign_ms, "ms"),
        Result("decide_fail_retry_50k", fail_ms, "ms"),
        with_baseline("decide_rate", ours, "decisions/s", "machine_per_request", per_machine),
    ]


@suite("rebuild")
async def rebuild_suite(b: Bench) -> list[Result]:
    """Events/s of a full rebuild of every projection vs reading and decoding the same log."""
    from projections.batches import BatchesProjection
    from projections.rebuild import rebuild
    from projections.requests import RequestsProjection
    from projections.runner import ProjectionRunner, decode
    from service.synthetic import aggregates, queue_many, requeue_failed, run_batch

    agg = aggregates(b.store)
    batches, size = b.size(16, 4), 2_000
    for n in range(batches):
        ids = await queue_many(agg, size, company=f"co{n % 3}", prefix=f"b{n}r")
        await run_batch(agg, f"b{n}", ids, fail_every=4, retryable=n % 2 == 0)
        if n % 3 == 0:
            await requeue_failed(agg, ids)
    projections = (RequestsProjection(), BatchesProjection())
    for p in projections:
        await ProjectionRunner(b.store, p).catch_up()
    head = await b.store.head()
    t = time.perf_counter()
    await rebuild(b.store, list(projections))
    ours = head / (time.perf_counter() - t)
    t = time.perf_counter()
    position = 0
    while page := await b.store.read_all(position, 10_000):
        decode(page)
        position = page[-1].position
    raw = head / (time.perf_counter() - t)
    return [with_baseline("rebuild", ours, "events/s", "read_decode", raw)]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


_FILL_REQUESTS = """
INSERT INTO requests (request_id, seq, company_id, session_id, model, source, status, attempts,
                      queued_at, updated_at, version, position)
SELECT 'req' || g, g, 'co' || (g % 20), 's' || g, 'gpt-4o-mini', 'bench',
       (ARRAY['PENDING_BATCHING', 'BATCHING_IN_PROGRESS', 'PROCESSING_COMPLETE',
              'PROCESSING_FAILED'])[1 + g % 4],
       1, now(), now(), 1, g
FROM generate_series(1, $1) g
"""


async def _fill_requests(store: EventStore, n: int) -> None:
    """n request rows (and their counters) straight into the projection: reads measure reads."""
    async with store.pool.acquire() as conn:
        await conn.execute(_FILL_REQUESTS, n)
        await conn.execute(
            "INSERT INTO request_status_counts"
            " SELECT company_id, status, count(*) FROM requests GROUP BY 1, 2"
        )
        await conn.execute("ANALYZE requests")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _start_cli(
    args: list[str], port: int, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """A `batchledger` subprocess, returned once it accepts connections on `port`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    for _ in range(400):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc
        except OSError:
            await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"batchledger {args[0]} did not start")


@suite("read_latency")
async def read_latency(b: Bench) -> list[Result]:
    """p50/p99 ms of the summary and a first page of requests with 1,000,000 requests stored."""
    from projections import queries

    await _fill_requests(b.store, b.size(1_000_000, 100_000))
    statuses = list(queries.REQUEST_STATUSES)

    async def timed(
        call: Callable[[int], Awaitable[object]], rounds: int = 2_000
    ) -> tuple[float, float]:
        samples = []
        for i in range(rounds):
            t = time.perf_counter()
            await call(i)
            samples.append((time.perf_counter() - t) * 1000)
        return _percentiles(samples)

    base50, base99 = await timed(lambda i: b.store.pool.fetchval("SELECT 1"))
    s50, s99 = await timed(
        lambda i: queries.summary(b.store.pool, None if i % 2 else f"co{i % 20}")
    )
    p50, p99 = await timed(
        lambda i: queries.requests_page(
            b.store.pool, statuses[i % 4], 50, company_id=f"co{i % 20}" if i % 3 == 0 else None
        )
    )
    return [
        with_baseline("summary_latency_p50", s50, "ms", "select_1_p50", base50),
        with_baseline("summary_latency_p99", s99, "ms", "select_1_p99", base99),
        with_baseline("requests_page_latency_p50", p50, "ms", "select_1_p50", base50),
        with_baseline("requests_page_latency_p99", p99, "ms", "select_1_p99", base99),
    ]


async def _start_emulator() -> tuple[asyncio.subprocess.Process, str]:
    """A zero-latency emulator in its own process (it gets the second core)."""
    port = _free_port()
    zero = ["--validating-seconds", "0", "--in-progress-seconds", "0", "--finalizing-seconds", "0"]
    proc = await _start_cli(["emulator", "--port", str(port), *zero], port)
    return proc, f"http://127.0.0.1:{port}"


@suite("pipeline")
async def pipeline(b: Bench) -> list[Result]:
    """Seconds for 100,000 pending requests to reach PROCESSED through the emulator."""
    from projections import queries
    from service.config import Settings
    from service.runtime import Runtime
    from service.synthetic import TRANSCRIPT, aggregates, queue_many

    n = b.size(100_000, 10_000)
    proc, url = await _start_emulator()
    try:
        settings = Settings(
            openai_base_url=f"{url}/v1",
            openai_api_key="sk-bench",
            batch_creation_interval_seconds=0,
            batch_polling_interval_seconds=0,
        )
        rt = await Runtime.open(settings, b.store.dsn)
        agg = aggregates(b.store)
        for start in range(0, n, 10_000):
            await queue_many(
                agg, min(10_000, n - start), prefix=f"p{start}-", transcript=TRANSCRIPT
            )
        await rt.catch_up()
        t = time.perf_counter()
        await rt.run_until_idle()
        seconds = time.perf_counter() - t
        done = (await queries.summary(b.store.pool))["processing_complete"]
        await rt.close()
    finally:
        proc.terminate()
        await proc.wait()
    if done != n:
        raise RuntimeError(f"only {done} of {n} requests completed")
    return [
        Result("pipeline_seconds", seconds, "s"),
        Result("pipeline_rate", n / seconds, "requests/s"),
    ]


async def _load(
    url: str, headers: dict[str, str], seconds: float, concurrency: int
) -> tuple[float, float]:
    """requests/s and p99 ms of GETs on `url` from `concurrency` clients for `seconds`."""
    import aiohttp

    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                async with session.get(url) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url} answered {r.status}")
                samples.append((time.perf_counter() - t) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(samples) / elapsed, _percentiles(samples)[1]


@suite("api")
async def api_load(b: Bench) -> list[Result]:
    """requests/s and p99 of summary and a requests page under load, 1,000,000 requests stored."""
    from service.api.tokens import Role, create_token

    await _fill_requests(b.store, b.size(1_000_000, 100_000))
    token = await create_token(b.store.pool, "bench", Role.support)
    port = _free_port()
    env = {
        "DATABASE_URL": b.store.dsn,
        "PORT": str(port),
        "LOG_LEVEL": "ERROR",
        "API_RATE_LIMIT_PER_MINUTE": "1000000",
    }
    proc = await _start_cli(["serve", "--no-schedulers", "--no-projections"], port, env)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    seconds, concurrency = (3.0, 16) if b.quick else (10.0, 32)
    try:
        health_rps, health_p99 = await _load(f"{base}/healthz", {}, seconds, concurrency)
        sum_rps, sum_p99 = await _load(
            f"{base}/api/admin/legacy/summary", headers, seconds, concurrency
        )
        page = f"{base}/api/admin/legacy/requests?status=processing_failed&limit=50"
        page_rps, page_p99 = await _load(page, headers, seconds, concurrency)
    finally:
        proc.terminate()
        await proc.wait()
    return [
        with_baseline("api_summary_rps", sum_rps, "req/s", "healthz_rps", health_rps),
        with_baseline("api_summary_p99", sum_p99, "ms", "healthz_p99", health_p99),
        with_baseline("api_requests_page_rps", page_rps, "req/s", "healthz_rps", health_rps),
        with_baseline("api_requests_page_p99", page_p99, "ms", "healthz_p99", health_p99),
    ]


async def _scratch_database(admin_dsn: str, name: str) -> str:
    from service.dsn import with_database

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    dsn = with_database(admin_dsn, name)
    await migrate(dsn)
    return dsn


async def _drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def run(admin_dsn: str, names: list[str], *, quick: bool) -> list[Result]:
    """Run each suite in a scratch database of its own on the server at `admin_dsn`."""
    results: list[Result] = []
    for name in names:
        db = f"batchledger_bench_{os.getpid()}"
        dsn = await _scratch_database(admin_dsn, db)
        store = await EventStore.open(dsn, max_size=8)
        try:
            print(f"running {name}...", file=sys.stderr, flush=True)
            results += await SUITES[name](Bench(store, quick))
        finally:
            await store.close()
            await _drop_database(admin_dsn, db)
    return results


def table(results: list[Result]) -> str:
    """The results as a fixed-width table."""
    head = (
        f"{'name':<24}{'value':>14} {'unit':<10}{'baseline':<14}{'baseline_value':>16}{'ratio':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        base = f"{r.baseline_value:>16,.1f}" if r.baseline_value is not None else f"{'-':>16}"
        ratio = f"{r.ratio:>8.2f}" if r.ratio is not None else f"{'-':>8}"
        lines.append(
            f"{r.name:<24}{r.value:>14,.1f} {r.unit:<10}{r.baseline or '-':<14}{base}{ratio}"
        )
    return "\n".join(lines)


def main(admin_dsn: str, names: list[str], *, quick: bool, json_path: str | None) -> int:
    """Entry point of the CLI command."""
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(
            f"unknown suite(s): {', '.join(unknown)}; known: {', '.join(SUITES)}", file=sys.stderr
        )
        return 2
    from service.logs import configure

    configure("WARNING", "console")  # the table goes to stdout; scheduler logs stay quiet
    results = asyncio.run(run(admin_dsn, names or list(SUITES), quick=quick))
    print(table(results))
    if json_path:
        with open(json_path, "wb") as f:
            f.write(msgspec.json.format(msgspec.json.encode({"results": results})) + b"\n")
    return 0
