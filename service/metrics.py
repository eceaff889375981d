"""Prometheus metrics: counters and histograms the pipeline feeds, gauges read at scrape time."""

from __future__ import annotations

import copy
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from eventstore import EventStore, WriterLockStats
from projections.registry import all_projections
from projections.runner import checkpoint
from service.relay_health import RelayHealth, RelayProgress
from statemachine.openai_status import OPENAI_STATUS_TO_STATE
from statemachine.states import IN_FLIGHT


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
        self.writer_lock = WriterLockStats()
        self.unrecognized: dict[str, int] = {}
        self.relay: tuple[RelayHealth, RelayProgress] | None = None

    def collect(
        self,
    ) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
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
        yield from _writer_lock_families(self.writer_lock)
        g = GaugeMetricFamily(
            "batchledger_batches_in_unrecognized_status",
            "Running batches whose last OpenAI status our table does not know, by that status.",
            labels=["openai_status"],
        )
        for status, n in self.unrecognized.items():
            g.add_metric([status], n)
        yield g
        if self.relay is not None:
            yield from _relay_families(*self.relay)


def _relay_families(
    health: RelayHealth, at: RelayProgress
) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """The JetStream relay: its checkpoint (shared by every instance) and this process's part."""
    labels = ["stream"]
    for name, text, value in (
        ("batchledger_relay_position", "Last log position JetStream acknowledged.", at.position),
        ("batchledger_relay_lag_events", "Events in the log not yet relayed.", at.lag_events),
        (
            "batchledger_relay_lag_seconds",
            "Age of the oldest event not yet relayed (0 when caught up).",
            at.lag_seconds,
        ),
        (
            "batchledger_relay_leader",
            "1 if this process is the relay's leader.",
            int(health.role == "leader"),
        ),
        (
            "batchledger_relay_connected",
            "1 if this process's relay is connected to NATS.",
            int(health.nats == "connected"),
        ),
    ):
        g = GaugeMetricFamily(name, text, labels=labels)
        g.add_metric([at.stream], value)
        yield g
    c = CounterMetricFamily(
        "batchledger_relay_publish_errors",
        "Publishes this process's relay saw fail, by reason (timeout, connection, no_stream,"
        " rejected, duplicate).",
        labels=["stream", "reason"],
    )
    for reason, n in health.publish_errors.items():
        c.add_metric([at.stream, reason], n)
    yield c


def _writer_lock_families(
    w: WriterLockStats,
) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
    """This process's appends against the writer lock (each instance has its own figures)."""
    yield CounterMetricFamily(
        "batchledger_writer_lock_waits",
        "Appends that found the writer lock taken and waited for it (timed-out ones too).",
        value=w.waits,
    )
    yield HistogramMetricFamily(
        "batchledger_writer_lock_wait_seconds",
        "Seconds appends waited for the writer lock.",
        buckets=[("+Inf" if bound == float("inf") else str(bound), n) for bound, n in w.buckets()],
        sum_value=w.wait_seconds,
    )
    yield CounterMetricFamily(
        "batchledger_writer_lock_timeouts",
        "Appends that gave up after WRITER_LOCK_TIMEOUT_SECONDS (writer_busy); they wrote nothing.",
        value=w.timeouts,
    )


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
        self.relay: RelayHealth | None = None  # set by `serve` when it runs the relay
        self.item_failures = Counter(
            "batchledger_scheduler_item_failures",
            "Batches whose poll, ingestion or submission raised; each is backed off alone.",
            labelnames=["step"],
            registry=self.registry,
        )
        self.unrecognized_statuses = Counter(
            "batchledger_openai_unrecognized_statuses",
            "Observations of an OpenAI batch status our table does not know (kept raw).",
            labelnames=["status"],
            registry=self.registry,
        )

    async def render_for(self, store: EventStore, companies: frozenset[str] | None) -> bytes:
        """The exposition text; for a token limited to `companies`, only their requests and
        batches per status (the log's head, lag, OpenAI errors, writer lock waits and timings
        are the whole service's: they are not shown to a scoped token).

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
        unrecognized = await store.pool.fetch(
            "SELECT openai_status, count(*) AS n FROM batches WHERE status = ANY($1::text[])"
            " AND openai_status <> ALL($2::text[]) GROUP BY 1",
            sorted(IN_FLIGHT),
            sorted(OPENAI_STATUS_TO_STATE),
        )
        head = await store.head()
        lag = {name: head - await checkpoint(store.pool, name) for name in all_projections()}
        relay = self.relay
        relayed = None if relay is None else (relay, await relay.progress())
        s = self._snapshot
        s.requests, s.batches = counts
        s.head, s.lag, s.openai_errors = head, lag, dict(self.error_source)
        s.writer_lock = copy.deepcopy(store.writer_lock)
        s.unrecognized = {r["openai_status"]: int(r["n"]) for r in unrecognized}
        s.relay = relayed
        return generate_latest(self.registry)
