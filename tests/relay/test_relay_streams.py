"""The relay meets streams that are not as it left them: a gap, another log's events, a
deleted stream, a reset, and pages slower to read than a flush."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

import pytest

from eventstore import EventStore
from service.adapters import relay_state
from service.adapters.jetstream import POSITION, Encoder, StreamSpec
from service.adapters.relay_state import Checkpoint
from service.entrypoints import relay as relay_module
from tests.relay.conftest import Running
from tests.relay.harness import connect
from tests.relay.test_relay import (
    assert_exactly_once_in_order,
    consume,
    history,
    relayed_to,
)

Start = Callable[..., Any]


async def publish_by_hand(
    store: EventStore, url: str, spec: StreamSpec, positions: list[int]
) -> None:
    """The log's events at `positions` into the stream, as a relay would have sent them."""
    events = {e.position: e for e in await store.read_all(0, max(positions))}
    nc = await connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(spec.config())
        encoder = Encoder(spec.prefix, 1 << 20, spec.name)
        for p in positions:
            m = encoder.message(events[p])
            headers = {k: v for k, v in m.headers.items() if not k.startswith("Nats-Expected")}
            await js.publish(m.subject, m.payload, headers=headers)
    finally:
        await nc.close()


async def refused(running: Running, seconds: float = 20) -> str:
    async with asyncio.timeout(seconds):
        while running.relay.health.nats != "refused":
            await asyncio.sleep(0.05)
    return running.relay.health.error or ""


async def test_jetstream_refuses_a_message_whose_predecessor_it_did_not_store(
    store: EventStore, nats_address: str, spec: StreamSpec
) -> None:
    await history(store, 5)
    events = await store.read_all(0, 4)
    nc = await connect(nats_address)
    try:
        js = nc.jetstream()
        await js.add_stream(spec.config())
        encoder = Encoder(spec.prefix, 1 << 20, spec.name)
        encoder.expect(0)
        first, second, third = (encoder.message(e) for e in events[:3])
        await js.publish(first.subject, first.payload, headers=dict(first.headers))
        # `second` never arrives (lost on the way): `third` must not be stored after `first`.
        with pytest.raises(Exception, match="wrong last msg ID"):
            await js.publish(third.subject, third.payload, headers=dict(third.headers))
        await js.publish(second.subject, second.payload, headers=dict(second.headers))
        await js.publish(third.subject, third.payload, headers=dict(third.headers))
        assert (await js.stream_info(spec.name)).state.messages == 3
    finally:
        await js.delete_stream(spec.name)
        await nc.close()


async def test_a_stream_with_a_gap_past_the_checkpoint_is_refused_not_filled_out_of_order(
    store: EventStore, nats_address: str, spec: StreamSpec, start_relay: Start
) -> None:
    await history(store, 20)
    await publish_by_hand(store, nats_address, spec, [1, 2, 3, 5, 6])
    await relay_state.save(store.pool, spec.name, Checkpoint(2, 2))
    running: Running = await start_relay(store, nats_address, spec)
    error = await refused(running)
    assert "holds event 5 right after event 3: event 4 is missing" in error
    nc = await connect(nats_address)
    try:
        assert (await nc.jetstream().stream_info(spec.name)).state.messages == 5
    finally:
        await nc.close()
    assert (await relay_state.load(store.pool, spec.name)).position == 2


async def test_another_logs_events_at_the_same_positions_are_refused(
    store: EventStore, db_dsn: str, nats_address: str, spec: StreamSpec, start_relay: Start
) -> None:
    """As after restoring an older backup: the positions come back with new events."""
    head = await history(store, 10)
    await publish_by_hand(store, nats_address, spec, list(range(1, head + 1)))
    await store.pool.execute("TRUNCATE events")  # the log starts again: same positions
    await store.pool.execute(
        "SELECT setval(pg_get_serial_sequence('events', 'position'), 1, false)"
    )
    await history(store, 10, tag="restored")
    running: Running = await start_relay(store, nats_address, spec)
    error = await refused(running)
    assert "holds another event at position 1" in error
    assert "restored from an older backup" in error


async def test_a_stream_deleted_under_the_relay_stops_it_until_a_reset_republishes_all(
    store: EventStore, db_dsn: str, nats_address: str, spec: StreamSpec, start_relay: Start
) -> None:
    head = await history(store, 30)
    first: Running = await start_relay(store, nats_address, spec)
    await relayed_to(store, spec, head)
    await first.halt()
    nc = await connect(nats_address)
    await nc.jetstream().delete_stream(spec.name)
    await nc.close()
    second: Running = await start_relay(store, nats_address, spec)
    assert "was deleted or recreated" in await refused(second)
    await second.halt()
    assert await reset(db_dsn, nats_address, spec, 0) == 0
    head = await history(store, 5, tag="after")
    await start_relay(store, nats_address, spec)
    await relayed_to(store, spec, head)
    assert_exactly_once_in_order(await consume(nats_address, spec, head), head)


async def test_reset_to_a_position_publishes_from_there_without_duplicating_the_stream(
    store: EventStore, db_dsn: str, nats_address: str, spec: StreamSpec, start_relay: Start
) -> None:
    head = await history(store, 200)
    first: Running = await start_relay(store, nats_address, spec)
    await relayed_to(store, spec, head)
    assert await reset(db_dsn, nats_address, spec, head - 40) == 1  # a leader is running
    await first.halt()
    assert await reset(db_dsn, nats_address, spec, head - 40) == 0
    at = await relay_state.load(store.pool, spec.name)
    nc = await connect(nats_address)
    try:
        msg = await nc.jetstream().get_msg(spec.name, at.stream_sequence)
        assert msg.headers is not None
        assert msg.headers[POSITION] == str(head - 40)
    finally:
        await nc.close()
    await start_relay(store, nats_address, spec)
    head = await history(store, 5, tag="after")
    await relayed_to(store, spec, head)
    assert_exactly_once_in_order(await consume(nats_address, spec, head), head)


async def test_pages_slower_to_read_than_a_flush_are_waited_for_not_read_again(
    store: EventStore,
    nats_address: str,
    spec: StreamSpec,
    start_relay: Start,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    head = await history(store, 3000)
    monkeypatch.setattr(relay_module, "FLUSH_SECONDS", 0.0005)
    await start_relay(store, nats_address, spec, page_size=1000)
    await relayed_to(store, spec, head, seconds=30)
    assert_exactly_once_in_order(await consume(nats_address, spec, head), head)


async def reset(dsn: str, url: str, spec: StreamSpec, to: int) -> int:
    """`batchledger relay reset --to N` as a process; its exit status."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.entrypoints.cli",
        "relay",
        "reset",
        "--to",
        str(to),
        env={
            **os.environ,
            "DATABASE_URL": dsn,
            "NATS_URL": url,
            "NATS_STREAM": spec.name,
            "NATS_SUBJECT_PREFIX": spec.prefix,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode
