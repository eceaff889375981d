"""Read-side suites: projection rebuild, query latency, the admin API under load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from eventstore import EventStore
from projections.requests import count_days_sql, count_hours_sql
from service.net import free_port
from service.tools.bench.core import Bench, Result, percentiles, suite, with_baseline
from service.tools.bench.processes import start_cli


@suite("rebuild")
async def rebuild_suite(b: Bench) -> list[Result]:
    """Events/s of a full rebuild of every projection vs reading and decoding the same log."""
    from projections.batches import BatchesProjection
    from projections.rebuild import rebuild
    from projections.requests import RequestsProjection
    from projections.runner import ProjectionRunner, decode
    from service.tools.synthetic import ledger, queue_many, requeue_failed, run_batch

    agg = ledger(b.store)
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


_FILL_REQUESTS = """
INSERT INTO requests (request_id, seq, company_id, session_id, model, source, status, attempts,
                      queued_at, updated_at, completed_at, cost_micro_usd, version, position)
SELECT 'req' || g, g, 'co' || (g % 20), 's' || g, 'gpt-4o-mini', 'bench', status, 1,
       finished, finished, CASE WHEN status = 'PROCESSING_COMPLETE' THEN finished END,
       CASE WHEN status = 'PROCESSING_COMPLETE' THEN 100 + g % 900 ELSE 0 END, 1, g
FROM generate_series(1, $1) g,
     LATERAL (SELECT (ARRAY['PENDING_BATCHING', 'BATCHING_IN_PROGRESS', 'PROCESSING_COMPLETE',
                            'PROCESSING_FAILED'])[1 + g % 4] AS status,
                     -- finished over the last 30 days: the overview's costs and chart
                     -- read a month of completions, the worst case
                     now() - (g % 720) * interval '1 hour' AS finished) f
"""


async def _fill_requests(store: EventStore, n: int) -> None:
    """n request rows (and their counters) straight into the projection: reads measure reads."""
    async with store.pool.acquire() as conn:
        await conn.execute(_FILL_REQUESTS, n)
        await conn.execute(
            "INSERT INTO request_status_counts"
            " SELECT company_id, status, count(*) FROM requests GROUP BY 1, 2"
        )
        await conn.execute(count_hours_sql("requests", "request_hours"))
        await conn.execute(count_days_sql("requests", "request_days"))
        await conn.execute("ANALYZE requests")


@suite("read_latency")
async def read_latency(b: Bench) -> list[Result]:
    """p50/p99 ms of the summary and a first page of requests with 1,000,000 requests stored."""
    from projections import queries
    from statemachine.states import RequestState

    await _fill_requests(b.store, b.size(1_000_000, 100_000))
    statuses = list(RequestState)

    async def timed(
        call: Callable[[int], Awaitable[object]], rounds: int = 2_000
    ) -> tuple[float, float]:
        samples = []
        for i in range(rounds):
            t = time.perf_counter()
            await call(i)
            samples.append((time.perf_counter() - t) * 1000)
        return percentiles(samples)

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
    return len(samples) / elapsed, percentiles(samples)[1]


@suite("api")
async def api_load(b: Bench) -> list[Result]:
    """requests/s and p99 of summary and a requests page under load, 1,000,000 requests stored."""
    from service.adapters.tokens import Role, create_token

    await _fill_requests(b.store, b.size(1_000_000, 100_000))
    token = await create_token(b.store.pool, "bench", Role.support)
    scoped = await create_token(b.store.pool, "bench-co3", Role.support, companies=["co3"])
    port = free_port()
    env = {
        "DATABASE_URL": b.store.dsn,
        "PORT": str(port),
        "LOG_LEVEL": "ERROR",
        "API_RATE_LIMIT_PER_MINUTE": "1000000",
    }
    proc = await start_cli(["serve", "--no-schedulers", "--no-projections"], port, env)
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
        # The same reads by a token limited to one of the 20 companies.
        one = {"Authorization": f"Bearer {scoped}"}
        ssum_rps, ssum_p99 = await _load(
            f"{base}/api/admin/legacy/summary", one, seconds, concurrency
        )
        spage_rps, spage_p99 = await _load(page, one, seconds, concurrency)
    finally:
        proc.terminate()
        await proc.wait()
    return [
        with_baseline("api_summary_rps", sum_rps, "req/s", "healthz_rps", health_rps),
        with_baseline("api_summary_p99", sum_p99, "ms", "healthz_p99", health_p99),
        with_baseline("api_requests_page_rps", page_rps, "req/s", "healthz_rps", health_rps),
        with_baseline("api_requests_page_p99", page_p99, "ms", "healthz_p99", health_p99),
        with_baseline("api_scoped_summary_rps", ssum_rps, "req/s", "api_summary_rps", sum_rps),
        with_baseline("api_scoped_summary_p99", ssum_p99, "ms", "api_summary_p99", sum_p99),
        with_baseline(
            "api_scoped_requests_page_rps", spage_rps, "req/s", "api_requests_page_rps", page_rps
        ),
        with_baseline(
            "api_scoped_requests_page_p99", spage_p99, "ms", "api_requests_page_p99", page_p99
        ),
    ]
