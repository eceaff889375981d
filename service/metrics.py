"""Prometheus metrics: counters and histograms the pipeline feeds, gauges read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from eventstore import EventStore
from projections.registry import all_projections
from projections.runner import checkpoint


class _Counts(Collector):
    """Requests and batches per status: the company data among the metrics."""

    def __init__(self, requests: dict[str, int], batches: dict[str, int]) -> None:
        self.requests = requests
        self.batches = batches

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("batchledger_requests", "Requests per status.", labels=["status"])
        for status, n in self.requests.items():
            g.add_metric([status], n)
        yield g
        g = GaugeMetricFamily("batchledger_batches", "Batches per status.", labels=["status"])
        for status, n in self.batches.items():
            g.add_metric([status], n)
        yield g


class _Snapshot(Collector):
    """Values gathered asynchronously just before each scrape."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.batches: dict[str, int] = {}
        self.head = 0
        self.lag: dict[str, int] = {}
        self.openai_errors: dict[str, int] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield from _Counts(self.requests, self.batches).collect()
        yield CounterMetricFamily(
            "batchledger_events_appended", "Events in the log (its head position).", value=self.head
        )
        g = GaugeMetricFamily(
            "batchledger_projection_lag_events",
            "Head position minus checkpoint.",
            labels=["projection"],
        )
        for name, lag in self.lag.items():
            g.add_metric([name], lag)
        yield g
        c = CounterMetricFamily(
            "batchledger_openai_errors", "OpenAI call errors by type.", labels=["type"]
        )
        for kind, n in self.openai_errors.items():
            c.add_metric([kind], n)
        yield c


class Metrics:
    """The registry of one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        buckets = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60)
        self.poll_seconds = Histogram(
            "batchledger_poll_seconds",
            "Duration of one batches.retrieve call.",
            registry=self.registry,
            buckets=buckets,
        )
        self.ingest_seconds = Histogram(
            "batchledger_ingest_seconds",
            "Duration of ingesting one batch.",
            registry=self.registry,
            buckets=buckets,
        )
        self.error_source: dict[str, int] = {}

    async def render_for(self, store: EventStore, companies: frozenset[str] | None) -> bytes:
        """The exposition text; for a token limited to `companies`, only their requests and
        batches per status (the log's head, lag, OpenAI errors and timings are the whole
        service's: they are not shown to a scoped token).

        Every value is read before any is set, so concurrent scrapes cannot mix counts.
        """
        scope = None if companies is None else sorted(companies)
        where = "WHERE $1::text[] IS NULL OR company_id = ANY($1::text[])"
        requests = await store.pool.fetch(
            f"SELECT status, sum(n)::bigint AS n FROM request_status_counts {where} GROUP BY 1",
            scope,
        )
        batches = await store.pool.fetch(
            f"SELECT status, count(*) AS n FROM batches {where} GROUP BY 1", scope
        )
        counts = (
            {r["status"].lower(): int(r["n"]) for r in requests},
            {r["status"].lower(): int(r["n"]) for r in batches},
        )
        if companies is not None:
            registry = CollectorRegistry()
            registry.register(_Counts(*counts))
            return generate_latest(registry)
        head = await store.head()
        lag = {name: head - await checkpoint(store.pool, name) for name in all_projections()}
        s = self._snapshot
        s.requests, s.batches = counts
        s.head, s.lag, s.openai_errors = head, lag, dict(self.error_source)
        return generate_latest(self.registry)
