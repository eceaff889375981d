"""The relay in the test's loop against the machine's NATS: what arrives, in what order, and
across NATS outages, leader changes and a crash past the duplicate window."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec

from eventstore import EventStore
from service.adapters import relay_state
from service.adapters.jetstream import (
    COMPANY,
    CORRELATION_ID,
    MSG_ID,
    POSITION,
    RECORDED_AT,
    STREAM_ID,
    TYPE,
    VERSION,
    StreamSpec,
)
from service.feed import event_item
from service.tools.synthetic import ledger, queue_many, run_batch
from tests.relay.conftest import Running
from tests.relay.harness import Proxy, Received, connect, drain, durable

Start = Callable[..., Any]


async def history(store: EventStore, n: int = 300, *, tag: str = "r") -> int:
    """Requests of two companies (one with a dot in its id) and a batch; the head."""
    led = ledger(store)
    ids = await queue_many(led, n, company="acme", prefix=f"{tag}a")
    await queue_many(led, n // 2, company="glo.bex", prefix=f"{tag}g")
    await run_batch(led, f"{tag}b", ids[:50], fail_every=7)
    return await store.head()


async def relayed_to(
    store: EventStore, spec: StreamSpec, position: int, seconds: float = 60
) -> None:
    """Wait until the relay's checkpoint reaches `position`."""
    async with asyncio.timeout(seconds):
        while (await relay_state.load(store.pool, spec.name)).position < position:
            await asyncio.sleep(0.05)


async def consume(url: str, spec: StreamSpec, expected: int, subject: str = "") -> Received:
    nc = await connect(url)
    try:
        js = nc.jetstream()
        await durable(js, spec.name, "integrator", subject or f"{spec.prefix}.>")
        return await drain(js, spec.name, "integrator", expected)
    finally:
        await nc.close()


def assert_exactly_once_in_order(got: Received, head: int) -> None:
    assert len(got.positions) == len(set(got.positions)), "an event arrived twice"
    assert got.positions == list(range(1, head + 1))


async def test_every_event_reaches_a_durable_consumer_once_in_log_order(
    store: EventStore, nats_address: str, spec: StreamSpec, start_relay: Start
) -> None:
    head = await history(store)
    await start_relay(store, nats_address, spec)
    await relayed_to(store, spec, head)
    got = await consume(nats_address, spec, head)
    assert_exactly_once_in_order(got, head)


async def test_messages_carry_the_subject_scheme_headers_and_the_events_body(
    store: EventStore, nats_address: str, spec: StreamSpec, start_relay: Start
) -> None:
    head = await history(store, 20)
    await start_relay(store, nats_address, spec)
    await relayed_to(store, spec, head)
    got = await consume(nats_address, spec, head)
    events = await store.read_all(0, head)
    encode = msgspec.json.Encoder().encode
    for e, subject, body, headers in zip(
        events, got.subjects, got.bodies, got.headers, strict=True
    ):
        company = "glo%2Ebex" if e.scope == "glo.bex" else e.scope
        assert subject == f"{spec.prefix}.{company}.{e.category}.{e.type}"
        assert body == encode(event_item(e))  # the event exactly as GET /events serves it
        assert headers[MSG_ID] == str(e.id)
        assert headers[POSITION] == str(e.position)
        assert headers[STREAM_ID] == e.stream_id
        assert headers[VERSION] == str(e.version)
        assert headers[TYPE] == e.type
        assert headers[RECORDED_AT] == e.recorded_at.isoformat()
        assert headers[COMPANY] == e.scope
        assert headers.get(CORRELATION_ID) == e.metadata.correlation_id
    assert {s.split(".")[2] for s in got.subjects} == {"request", "batch"}


async def test_events_appended_while_relaying_follow_without_delay_of_a_poll(
    store: EventStore, nats_address: str, spec: StreamSpec, start_relay: Start
) -> None:
    first = await history(store, 10)
    await start_relay(store, nats_address, spec)
    await relayed_to(store, spec, first)
    head = await history(store, 10, tag="later")
    await relayed_to(store, spec, head, seconds=10)
    assert_exactly_once_in_order(await consume(nats_address, spec, head), head)


async def test_a_nats_outage_mid_flight_loses_nothing_and_duplicates_nothing(
    store: EventStore, nats_address: str, spec: StreamSpec, start_relay: Start
) -> None:
    host, port = nats_address.removeprefix("nats://").rsplit(":", 1)
    proxy = Proxy(host, int(port))
    await proxy.start()
    await history(store, 4000)
    first = await store.head()
    running: Running = await start_relay(store, proxy.url, spec, window=64)
    async with asyncio.timeout(30):  # some of it acknowledged, not all
        while running.relay.health.acked < 200:
            await asyncio.sleep(0.001)
    await proxy.cut()
    assert running.relay.health.acked < first, "cut after the relay had finished"
    head = await history(store, 500, tag="during")
    async with asyncio.timeout(30):
        while running.relay.health.nats != "unreachable":
            await asyncio.sleep(0.05)
    assert sum(running.relay.health.publish_errors.values()) >= 1
    stalled = (await relay_state.load(store.pool, spec.name)).position
    assert stalled < head
    await proxy.start()
    await relayed_to(store, spec, head)
    assert running.relay.health.nats == "connected"
    assert_exactly_once_in_order(await consume(nats_address, spec, head), head)
    await proxy.cut()


async def test_two_relays_on_one_database_elect_one_leader_and_hand_over(
    store: EventStore, nats_address: str, spec: StreamSpec, start_relay: Start, db_dsn: str
) -> None:
    other_store = await EventStore.open(db_dsn, max_size=3)
    try:
        head = await history(store, 2000)
        a: Running = await start_relay(store, nats_address, spec)
        b: Running = await start_relay(other_store, nats_address, spec)
        await relayed_to(store, spec, head)
        roles = sorted([a.relay.health.role, b.relay.health.role])
        assert roles == ["leader", "standby"]
        leader, follower = (a, b) if a.relay.health.role == "leader" else (b, a)
        await leader.halt()  # its lock is released with its connection
        head = await history(store, 500, tag="after")
        await relayed_to(store, spec, head, seconds=30)
        assert follower.relay.health.role == "leader"
        assert leader.relay.sessions >= 1
        assert follower.relay.sessions >= 1
        assert_exactly_once_in_order(await consume(nats_address, spec, head), head)
    finally:
        await other_store.close()


async def test_a_restart_past_the_duplicate_window_publishes_nothing_twice(
    store: EventStore, nats_address: str, start_relay: Start
) -> None:
    """Acknowledged but not checkpointed messages are read back from the stream at start:
    de-duplication cannot hide them once its window has passed."""
    from tests.relay.harness import unique_spec

    spec = unique_spec(duplicate_window_seconds=1)
    head = await history(store, 1000)
    first: Running = await start_relay(store, nats_address, spec)
    await relayed_to(store, spec, head)
    # As if it crashed after JetStream acknowledged the last 600 and before it saved them.
    behind = head - 600
    nc = await connect(nats_address)
    try:
        js = nc.jetstream()
        await first.halt()
        msg = await js.get_msg(spec.name, behind)
        assert msg.headers is not None
        assert msg.headers[POSITION] == str(behind)
        await store.pool.execute(
            "UPDATE relay_checkpoints SET position = $2, stream_sequence = $2 WHERE stream = $1",
            spec.name,
            behind,
        )
        await asyncio.sleep(1.5)  # past the duplicate window
        await start_relay(store, nats_address, spec)
        head = await history(store, 10, tag="next")
        await relayed_to(store, spec, head)
        assert_exactly_once_in_order(await consume(nats_address, spec, head), head)
        assert (await js.stream_info(spec.name)).state.messages == head
    finally:
        await js.delete_stream(spec.name)
        await nc.close()


async def test_metrics_show_the_relays_position_lag_and_publish_errors(
    store: EventStore, nats_address: str, spec: StreamSpec, start_relay: Start
) -> None:
    from service.metrics import Metrics

    head = await history(store, 20)
    running: Running = await start_relay(store, nats_address, spec)
    await relayed_to(store, spec, head)
    running.relay.health.failed("timeout")
    metrics = Metrics()
    metrics.relay = running.relay.health
    await running.halt()
    behind = await history(store, 5, tag="unrelayed")
    text = (await metrics.render_for(store, None)).decode()
    label = f'stream="{spec.name}"'
    assert f"batchledger_relay_position{{{label}}} {head}.0" in text
    assert f"batchledger_relay_lag_events{{{label}}} {behind - head}.0" in text
    lag_seconds = next(
        ln for ln in text.splitlines() if ln.startswith("batchledger_relay_lag_seconds")
    )
    assert float(lag_seconds.rsplit(" ", 1)[1]) > 0
    assert f'batchledger_relay_publish_errors_total{{reason="timeout",{label}}} 1.0' in text
    scoped = (await metrics.render_for(store, frozenset({"acme"}))).decode()
    assert "batchledger_relay" not in scoped  # the whole service's figures, not a company's
