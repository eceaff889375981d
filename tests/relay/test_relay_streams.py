"""The relay meets streams that are not as it left them: a gap, another log's events, a
deleted stream, a reset, and pages slower to read than a flush."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest

from eventstore import EventStore
from service.adapters import relay_state
from service.adapters.jetstream import POSITION, Encoder, StreamSpec
from service.adapters.relay_state import Checkpoint
from service.entrypoints import relay as relay_module
from tests.relay.conftest import Running
from tests.relay.harness import connect, free_port, nats_server, unique_spec
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


async def purge(url: str, spec: StreamSpec) -> None:
    nc = await connect(url)
    try:
        await nc.jetstream().purge_stream(spec.name)
    finally:
        await nc.close()


async def test_a_purged_stream_is_not_reset_into_jetstreams_duplicate_window(
    store: EventStore, db_dsn: str, nats_address: str, spec: StreamSpec, start_relay: Start
) -> None:
    """JetStream remembers purged ids for the duplicate window and stores nothing of them:
    the relay stops and says so instead of counting them as published."""
    head = await history(store, 20)
    first: Running = await start_relay(store, nats_address, spec)
    await relayed_to(store, spec, head)
    await first.halt()
    await purge(nats_address, spec)
    assert await reset(db_dsn, nats_address, spec, 0) == 0
    second: Running = await start_relay(store, nats_address, spec)
    assert "took it for a duplicate of sequence" in await refused(second)
    assert (await relay_state.load(store.pool, spec.name)).position == 0


async def test_a_purged_stream_reset_after_the_duplicate_window_gets_every_event_again(
    store: EventStore, db_dsn: str, nats_address: str, start_relay: Start
) -> None:
    spec = unique_spec(duplicate_window_seconds=1)
    try:
        head = await history(store, 20)
        first: Running = await start_relay(store, nats_address, spec)
        await relayed_to(store, spec, head)
        await first.halt()
        await purge(nats_address, spec)
        await asyncio.sleep(1.5)
        assert await reset(db_dsn, nats_address, spec, 0) == 0
        await start_relay(store, nats_address, spec)
        await relayed_to(store, spec, head)
        assert_exactly_once_in_order(await consume(nats_address, spec, head), head)
    finally:
        await delete(nats_address, spec)


async def test_acknowledged_messages_the_streams_age_limit_removed_are_not_a_gap(
    store: EventStore, nats_address: str, start_relay: Start
) -> None:
    spec = unique_spec(max_age_seconds=1, duplicate_window_seconds=1)
    try:
        head = await history(store, 20)
        first: Running = await start_relay(store, nats_address, spec)
        await relayed_to(store, spec, head)
        await first.halt()
        # As if it crashed before saving the last 15; then they all aged out.
        await relay_state.reset(store.pool, spec.name, Checkpoint(head - 15, head - 15))
        await asyncio.sleep(2.5)
        more = await history(store, 4, tag="later")
        second: Running = await start_relay(store, nats_address, spec)
        await relayed_to(store, spec, more)
        assert second.relay.health.nats == "connected"
        nc = await connect(nats_address)
        try:  # only the new events were published: nothing of the aged-out ones again
            assert (await nc.jetstream().stream_info(spec.name)).state.last_seq == more
        finally:
            await nc.close()
    finally:
        await delete(nats_address, spec)


async def test_reset_into_events_gone_from_the_stream_before_later_ones_is_refused(
    store: EventStore, db_dsn: str, nats_address: str, spec: StreamSpec
) -> None:
    """Events 1-29 aged out, 30-40 remain: publishing 6-29 now would follow event 40."""
    await history(store, 40)
    await publish_by_hand(store, nats_address, spec, list(range(30, 41)))
    assert await reset(db_dsn, nats_address, spec, 5) == 1
    assert await reset(db_dsn, nats_address, spec, 29) == 0
    assert await relay_state.load(store.pool, spec.name) == Checkpoint(29, 0)
    assert await reset(db_dsn, nats_address, spec, 35) == 0
    assert await relay_state.load(store.pool, spec.name) == Checkpoint(35, 6)


async def test_a_relay_stops_at_once_while_nats_does_not_answer(
    store: EventStore, tmp_path: Path, nats_server_bin: str, start_relay: Start
) -> None:
    spec = unique_spec()
    with nats_server(tmp_path) as server:
        await history(store, 500)
        running: Running = await start_relay(store, server.url, spec, ack_timeout=30.0, window=16)
        async with asyncio.timeout(20):
            while running.relay.health.acked == 0:
                await asyncio.sleep(0.01)
        server.process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(0.3)  # the window fills and waits for acknowledgements
            started = time.monotonic()
            await running.halt()
            assert time.monotonic() - started < 5
        finally:
            server.process.send_signal(signal.SIGCONT)


async def test_a_refusing_first_server_in_nats_url_does_not_stop_the_relay(
    store: EventStore, nats_address: str, spec: StreamSpec, start_relay: Start
) -> None:
    head = await history(store, 20)
    url = f"nats://127.0.0.1:{free_port()},{nats_address}"
    running: Running = await start_relay(store, url, spec)
    await relayed_to(store, spec, head, seconds=20)
    assert running.relay.health.nats == "connected"


async def delete(url: str, spec: StreamSpec) -> None:
    nc = await connect(url)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(spec.name)
    finally:
        await nc.close()
