"""The relay suite: events/s from the log to JetStream, acknowledged, against nats-py.

200,000 events (RequestQueued with a transcript, four companies) are appended through the
application layer. The baseline is nats-py's own pipelined publishing (`publish_async`,
the same window of outstanding acknowledgements) of the very messages the relay sends,
built beforehand; the relay reads them from PostgreSQL, encodes them, publishes them and
checkpoints. Each side runs twice, alternating, into a fresh stream; the best of each
counts. Then, with the relay caught up, single appends are timed until an ordered
consumer receives them (append-to-consumer latency). NATS_URL or 127.0.0.1:4222.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from nats.aio.client import Client
from nats.js import api

from service.adapters.jetstream import Encoder, Message, StreamSpec
from service.entrypoints.relay import Relay, RelayConfig
from service.tools.bench.core import Bench, Result, percentiles, suite, with_baseline
from service.tools.synthetic import TRANSCRIPT, ledger, queue_many

TARGET_RATIO = 0.7
WINDOW = 1024
COMPANIES = ("acme", "globex", "initech", "umbrella")


def _url() -> str:
    return os.environ.get("NATS_URL") or "nats://127.0.0.1:4222"


def _spec(kind: str) -> StreamSpec:
    tag = uuid.uuid4().hex[:8]
    return StreamSpec(name=f"BENCH_{kind.upper()}_{tag}", prefix=f"bench{kind}{tag}")


async def _fill(b: Bench, n: int) -> int:
    led = ledger(b.store)
    chunk = 5_000
    for i in range(0, n, chunk):
        company = COMPANIES[(i // chunk) % len(COMPANIES)]
        await queue_many(
            led, min(chunk, n - i), company=company, prefix=f"q{i}-", transcript=TRANSCRIPT
        )
    return await b.store.head()


async def _connect() -> Client:
    nc = Client()
    await nc.connect(servers=[_url()], allow_reconnect=False, connect_timeout=5)
    return nc


async def _baseline(messages: list[Message], spec: StreamSpec) -> float:
    """nats-py publishing `messages` with WINDOW outstanding acks; events/s."""
    nc = await _connect()
    try:
        js = nc.jetstream(publish_async_max_pending=WINDOW)
        await js.add_stream(spec.config())
        started = time.perf_counter()
        acks = [
            await js.publish_async(m.subject, m.payload, headers=dict(m.headers)) for m in messages
        ]
        await js.publish_async_completed()
        elapsed = time.perf_counter() - started
        assert all(a.result().seq for a in acks)
        await js.delete_stream(spec.name)
        return len(messages) / elapsed
    finally:
        await nc.close()


class Running:
    """A relay started by the bench, from position 0 into a stream of its own."""

    def __init__(self, b: Bench) -> None:
        self.spec = _spec("relay")
        self.relay = Relay(b.store, RelayConfig(_url(), None, self.spec, window=WINDOW))
        self.stop = asyncio.Event()
        self.task = asyncio.ensure_future(self.relay.run(self.stop))

    async def halt(self, b: Bench) -> None:
        """Stop it, then delete its stream and checkpoint (the next starts from 0)."""
        self.stop.set()
        await self.task
        await b.store.pool.execute("DELETE FROM relay_checkpoints")
        nc = await _connect()
        try:
            await nc.jetstream().delete_stream(self.spec.name)
        finally:
            await nc.close()


async def _relay(b: Bench, head: int) -> tuple[float, Running]:
    """The relay from position 0 to `head`, acknowledged; events/s (it keeps running)."""
    started = time.perf_counter()
    running = Running(b)
    while running.relay.health.acked < head:  # noqa: ASYNC110 - polled: no event to wait on
        await asyncio.sleep(0.002)
    return head / (time.perf_counter() - started), running


async def _latency(b: Bench, spec: StreamSpec, rounds: int) -> list[float]:
    """ms from just before an append to its message reaching an ordered consumer."""
    nc = await _connect()
    led = ledger(b.store)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(
            f"{spec.prefix}.>",
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
        )
        samples = []
        for i in range(rounds):
            started = time.perf_counter()
            await queue_many(led, 1, prefix=f"lat{i}-", transcript=TRANSCRIPT)
            await sub.next_msg(timeout=10)
            samples.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.005)
        await sub.unsubscribe()
        return samples
    finally:
        await nc.close()


@suite("relay")
async def relay_throughput(b: Bench) -> list[Result]:
    """Relay events/s against nats-py's with the same messages and window; latency p50/p99."""
    head = await _fill(b, b.size(200_000, 10_000))
    events = []
    after = 0
    while page := await b.store.read_all(after, 10_000):
        events += page
        after = page[-1].position
    base_spec = _spec("base")
    # As the relay sends them into a new stream: each names its predecessor.
    encoder = Encoder(base_spec.prefix, 1_048_576, base_spec.name)
    encoder.expect(0)
    messages = [encoder.message(e) for e in events]
    del events
    base_rates, relay_rates = [], []
    for turn in range(2):
        base_rates.append(await _baseline(messages, base_spec))
        rate, running = await _relay(b, head)
        relay_rates.append(rate)
        if turn == 0:
            await running.halt(b)
    samples = await _latency(b, running.spec, b.size(1_000, 50))
    await running.halt(b)
    p50, p99 = percentiles(samples)
    best_relay, best_base = max(relay_rates), max(base_rates)
    verdict = "met" if best_relay >= TARGET_RATIO * best_base else "MISSED"
    return [
        with_baseline(
            f"relay_events ({verdict} >= {TARGET_RATIO})",
            best_relay,
            "events/s",
            "nats-py",
            best_base,
        ),
        Result("relay_latency_p50", p50, "ms"),
        Result("relay_latency_p99", p99, "ms"),
    ]
