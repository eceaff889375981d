"""The console suite: server time of the admin console's busiest pages, 1,000,000 requests.

The real application (API and console, as `serve` builds it) runs in this process on the
scratch database, filled as for `read_latency` and `api` (`_fill_requests`), plus a few
requests with a real history in the log for the detail page. A support token signs in
through the sessions adapter; each page is then fetched N times in turn, one at a time,
and an outermost middleware times the server's part of each (from the request's arrival
to the response being ready). `BENCH_CONSOLE_PAGES=overview,requests` measures only
those pages (default: all).

The pages filtered by days: `requests_dates` by one old day (31 to 59 days ago, every
status), `requests_30days` by 30 old days (every status), `requests_selective` by failed
requests of one company queued from 59 days ago on (no end). For them the fill's
queued_at is made to grow with seq over the last 60 days, as the ledger writes it (the
shared fill spreads it over the hours of a month regardless of seq, where every day is
found at once), and `request_days` is counted again from it.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from aiohttp import web

from projections.requests import count_days_sql
from service.tools.bench.core import Bench, Result, percentiles, suite, with_baseline
from service.tools.bench.read_suites import _fill_requests

TARGET_P95_MS = 50.0
COMPANIES = 20  # as _fill_requests spreads them
HISTORY_COMPANY = "co3"
QUEUED_DAYS = 60  # the dates page's fill: queued over the last 60 days, in seq order
OLD_DAYS = range(31, 60)  # the days the dates page asks for
PLACEHOLDER_TEXT = "This page is being built."


@dataclass(frozen=True)
class Page:
    """A page measured: its key, the route name it needs, and its URL for round i."""

    key: str
    route: str
    url: Callable[[int], str]


def _pages(detail_ids: list[str]) -> list[Page]:
    return [
        Page("overview", "overview", lambda i: "/admin/"),
        Page(
            "requests",
            "requests",
            lambda i: f"/admin/requests?status=processing_complete&company=co{i % COMPANIES}",
        ),
        Page("request", "request", lambda i: f"/admin/requests/{detail_ids[i % len(detail_ids)]}"),
        Page("requests_dates", "requests", _old_day),
        Page("requests_30days", "requests", _old_month),
        Page("requests_selective", "requests", _failed_since),
    ]


def _old_day(i: int) -> str:
    day = (datetime.now(UTC) - timedelta(days=OLD_DAYS[i % len(OLD_DAYS)])).date()
    return f"/admin/requests?status=all&from={day}&to={day}"


def _days_ago(n: int) -> str:
    return str((datetime.now(UTC) - timedelta(days=n)).date())


def _old_month(i: int) -> str:
    start = OLD_DAYS[i % len(OLD_DAYS)]
    return f"/admin/requests?status=all&from={_days_ago(start)}&to={_days_ago(start - 29)}"


def _failed_since(i: int) -> str:
    company = f"co{i % COMPANIES}"
    return f"/admin/requests?status=processing_failed&company={company}&from={_days_ago(59)}"


async def _queued_in_seq_order(b: Bench) -> None:
    """queued_at grows with seq over QUEUED_DAYS, give or take seconds, as the ledger writes it."""
    n = int(await b.store.pool.fetchval("SELECT max(seq) FROM requests"))
    step = QUEUED_DAYS * 86_400_000 // n
    async with b.store.pool.acquire() as conn:
        await conn.execute(
            "UPDATE requests SET queued_at = now() - make_interval(days => $1)"
            " + seq * make_interval(secs => $2::float8 / 1000)"
            " + (seq * 7919 % 5 - 2) * interval '1 second'",
            QUEUED_DAYS,
            step,
        )
        await conn.execute("TRUNCATE request_days")
        await conn.execute(count_days_sql("requests", "request_days"))
        await conn.execute("VACUUM ANALYZE requests")


PAGE_KEYS = (
    "overview",
    "requests",
    "request",
    "requests_dates",
    "requests_30days",
    "requests_selective",
)
DATED = frozenset({"requests_dates", "requests_30days", "requests_selective"})


def _chosen() -> list[str]:
    raw = os.environ.get("BENCH_CONSOLE_PAGES", "")
    chosen = [p.strip() for p in raw.split(",") if p.strip()] or list(PAGE_KEYS)
    unknown = [p for p in chosen if p not in PAGE_KEYS]
    if unknown:
        raise RuntimeError(
            f"BENCH_CONSOLE_PAGES names unknown page(s) {unknown}; known: {list(PAGE_KEYS)}"
        )
    return chosen


class PageNotBuilt(RuntimeError):
    """A console page to measure answers something else than its real page."""


async def _with_history(b: Bench, n: int) -> list[str]:
    """n requests of HISTORY_COMPANY through a batch in the log; their ids."""
    from projections.registry import all_projections
    from projections.runner import ProjectionRunner
    from service.tools.synthetic import TRANSCRIPT, ledger, queue_many, run_batch

    agg = ledger(b.store)
    ids = await queue_many(agg, n, company=HISTORY_COMPANY, prefix="hist-", transcript=TRANSCRIPT)
    await run_batch(agg, "bench-console", ids, fail_every=10)
    for projection in all_projections().values():
        await ProjectionRunner(b.store, projection).catch_up()
    return ids


@suite("console")
async def console_pages(b: Bench) -> list[Result]:
    """Server p50/p95/p99 ms of the console's busiest pages at 1,000,000 requests, vs 50 ms."""
    import aiohttp

    from service.adapters.sessions import create_session
    from service.adapters.tokens import Role, create_token
    from service.config import Settings
    from service.entrypoints.api.app import create_app
    from service.entrypoints.api.ratelimit import RateLimiter
    from service.entrypoints.api.server import build_deps
    from service.entrypoints.runtime import Runtime
    from service.net import free_port

    chosen = _chosen()
    await _fill_requests(b.store, b.size(1_000_000, 5_000))
    if DATED.intersection(chosen):
        await _queued_in_seq_order(b)
    detail_ids = await _with_history(b, b.size(200, 20))
    rounds, warmup = b.size(1_000, 30), b.size(20, 5)
    settings = Settings(openai_api_key="sk-bench", console_enabled=True)
    rt = await Runtime.open(settings, b.store.dsn)
    deps = await build_deps(rt.store, rt.app, rt.metrics, settings)
    deps = replace(deps, token_limiter=RateLimiter(1_000_000_000))
    token = await create_token(b.store.pool, "bench-console", Role.support)
    opened = await create_session(b.store.pool, token, max_age=timedelta(hours=1))
    assert opened is not None
    timings: list[float] = []

    @web.middleware
    async def server_time(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            timings.append((time.perf_counter() - started) * 1000)

    app = create_app(deps)
    app.middlewares.insert(0, server_time)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    cookie = {"Cookie": f"bl_session={opened.session_id}"}
    pages = [p for p in _pages(detail_ids) if p.key in chosen]
    results: list[Result] = []
    try:
        async with aiohttp.ClientSession(base, headers=cookie) as http:

            async def fetch(url: str) -> float:
                async with http.get(url, allow_redirects=False) as answer:
                    body = await answer.text()
                    if answer.status == 200 and PLACEHOLDER_TEXT not in body:
                        return timings[-1]
                    if answer.status in (200, 404, 501):  # a placeholder, or no route yet
                        why = "page not built"
                    else:
                        why = "the page failed: see the log above"
                    raise PageNotBuilt(
                        f"console page {url} answered {answer.status} ({why}); measure the"
                        " others with e.g. BENCH_CONSOLE_PAGES=overview"
                    )

            order = list(range(rounds))
            random.Random(16).shuffle(order)
            for page in pages:
                for i in range(warmup):
                    await fetch(page.url(i))
                samples = [await fetch(page.url(i)) for i in order]
                results += _figures(page.key, samples)
    finally:
        await runner.cleanup()
        await rt.close()
    return results


def _figures(key: str, samples: list[float]) -> list[Result]:
    ordered = sorted(samples)
    p50, p99 = percentiles(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    verdict = "met" if p95 <= TARGET_P95_MS else "MISSED"
    print(
        f"console {key}: p95 {p95:.1f} ms, target <= {TARGET_P95_MS:.0f} ms: {verdict}",
        file=sys.stderr,
        flush=True,
    )
    return [
        Result(f"console_{key}_p50", p50, "ms"),
        with_baseline(f"console_{key}_p95", p95, "ms", "target_p95", TARGET_P95_MS),
        Result(f"console_{key}_p99", p99, "ms"),
    ]
