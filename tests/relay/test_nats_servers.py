"""The relay against nats-server processes of our own: per-company permissions, JetStream
off, and a relay user without the permissions it needs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import pytest
from nats.js import api

from eventstore import EventStore
from service.adapters.jetstream import POSITION, StreamSpec
from tests.relay.harness import connect, drain, durable, nats_server, unique_spec
from tests.relay.test_relay import history, relayed_to

# What docs/integrations.md tells an operator to grant: the relay publishes its subjects
# and manages its stream; a company's integrator creates, reads and acks only a consumer
# named after it, filtered to its company's subjects, and receives on its own inbox
# prefix (a shared _INBOX.> would show it every other user's replies and deliveries).
ACCOUNTS = """
accounts {{
  LIVEDASH {{
    jetstream: enabled
    users: [
      {{user: relay, password: relay, permissions: {{
        publish: ["{prefix}.>", "$JS.API.>"], subscribe: ["_INBOX_relay.>"]}}}}
      {{user: acme, password: acme, permissions: {{
        publish: [
          "$JS.API.CONSUMER.CREATE.{stream}.acme.{prefix}.acme.>",
          "$JS.API.CONSUMER.INFO.{stream}.acme",
          "$JS.API.CONSUMER.MSG.NEXT.{stream}.acme",
          "$JS.ACK.{stream}.acme.>"
        ], subscribe: ["_INBOX_acme.>"]}}}}
      {{user: globex, password: globex, permissions: {{
        publish: [
          "$JS.API.CONSUMER.CREATE.{stream}.globex.{prefix}.glo%2Ebex.>",
          "$JS.API.CONSUMER.INFO.{stream}.globex",
          "$JS.API.CONSUMER.MSG.NEXT.{stream}.globex",
          "$JS.ACK.{stream}.globex.>"
        ], subscribe: ["_INBOX_globex.>"]}}}}
      {{user: admin, password: admin}}
      {{user: mute, password: mute, permissions: {{
        publish: ["{prefix}.>"], subscribe: ["_INBOX_relay.>"]}}}}
    ]
  }}
}}
"""


def accounts(spec: StreamSpec) -> str:
    return (
        ACCOUNTS.format(prefix=spec.prefix, stream=spec.name).replace("{", "{{").replace("}", "}}")
    )


def as_user(url: str, user: str) -> str:
    return url.replace("nats://", f"nats://{user}:{user}@")


async def test_a_company_scoped_consumer_sees_only_its_companys_subjects(
    store: EventStore, tmp_path: Path, nats_server_bin: str, start_relay: Any
) -> None:
    spec = unique_spec()
    with nats_server(tmp_path, accounts(spec)) as server:
        head = await history(store, 100)
        await start_relay(store, as_user(server.url, "relay"), spec, inbox="_INBOX_relay")
        await relayed_to(store, spec, head)
        acme_events = [e.position for e in await store.read_all(0, head) if e.scope == "acme"]
        nc = await connect(server.url, user="acme", password="acme", inbox_prefix="_INBOX_acme")
        try:
            js = nc.jetstream(timeout=1)
            await durable(js, spec.name, "acme", f"{spec.prefix}.acme.>")
            got = await drain(js, spec.name, "acme", len(acme_events))
            assert got.positions == acme_events
            assert all(s.startswith(f"{spec.prefix}.acme.") for s in got.subjects)
            # The same user cannot widen its filter, nor read another company's consumer.
            with pytest.raises(nats.errors.TimeoutError):
                await js.add_consumer(
                    spec.name,
                    api.ConsumerConfig(
                        name="acme", durable_name="acme", filter_subject=f"{spec.prefix}.>"
                    ),
                )
            with pytest.raises(nats.errors.TimeoutError):
                await durable(js, spec.name, "globex", f"{spec.prefix}.glo%2Ebex.>")
        finally:
            await nc.close()
        admin = await connect(server.url, user="admin", password="admin")
        try:  # an operator made globex's consumer: acme still cannot pull from it
            await durable(admin.jetstream(), spec.name, "globex", f"{spec.prefix}.glo%2Ebex.>")
        finally:
            await admin.close()
        nc = await connect(server.url, user="acme", password="acme", inbox_prefix="_INBOX_acme")
        try:
            sub = await nc.jetstream(timeout=1).pull_subscribe_bind("globex", stream=spec.name)
            with pytest.raises(nats.errors.TimeoutError):
                await sub.fetch(1, timeout=1)
        finally:
            await nc.close()
        await _inboxes_are_private(server.url, spec)


async def _inboxes_are_private(url: str, spec: StreamSpec) -> None:
    """acme listening on every inbox sees nothing of what globex fetches."""
    spy = await connect(url, user="acme", password="acme", inbox_prefix="_INBOX_acme")
    seen: list[str] = []

    async def note(msg: Any) -> None:
        seen.append(msg.subject)

    for subject in ("_INBOX.>", "_INBOX_globex.>", "_INBOX_relay.>"):
        await spy.subscribe(subject, cb=note)
    await spy.flush()
    globex = await connect(url, user="globex", password="globex", inbox_prefix="_INBOX_globex")
    try:
        got = await drain(globex.jetstream(timeout=2), spec.name, "globex", 50, seconds=10)
        assert len(got.positions) == 50  # globex still gets its own company's events
        assert all(s.startswith(f"{spec.prefix}.glo%2Ebex.") for s in got.subjects)
        await asyncio.sleep(0.3)
        assert seen == []
    finally:
        await globex.close()
        await spy.close()


async def test_jetstream_off_is_a_clear_error_and_the_relay_keeps_trying(
    store: EventStore, tmp_path: Path, nats_server_bin: str, start_relay: Any
) -> None:
    with nats_server(tmp_path, jetstream=False) as server:
        running = await start_relay(store, server.url, unique_spec())
        async with asyncio.timeout(20):
            while running.relay.health.nats != "refused":
                await asyncio.sleep(0.05)
        error = running.relay.health.error or ""
        assert f"JetStream is not enabled on the NATS server at {server.url}" in error
        assert "-js" in error
        assert not running.task.done()  # waiting to try again, not crashed


async def test_a_relay_user_without_permissions_gets_a_clear_error(
    store: EventStore, tmp_path: Path, nats_server_bin: str, start_relay: Any
) -> None:
    spec = unique_spec()
    with nats_server(tmp_path, accounts(spec)) as server:
        await history(store, 5)
        running = await start_relay(
            store, as_user(server.url, "mute"), spec, ack_timeout=1.0, inbox="_INBOX_relay"
        )
        async with asyncio.timeout(20):
            while running.relay.health.nats != "refused":
                await asyncio.sleep(0.05)
        error = running.relay.health.error or ""
        assert "refuses the relay's user" in error
        assert "permissions violation" in error.lower()
        assert "$JS.API" in error
        assert "mute" not in running.relay.health.where  # credentials never shown


async def test_the_stream_is_updated_to_changed_settings_at_start(
    store: EventStore, tmp_path: Path, nats_server_bin: str, start_relay: Any
) -> None:
    spec = unique_spec(max_age_seconds=3600)
    with nats_server(tmp_path) as server:
        head = await history(store, 5)
        first = await start_relay(store, server.url, spec)
        await relayed_to(store, spec, head)
        await first.halt()
        changed = StreamSpec(
            name=spec.name,
            prefix=spec.prefix,
            max_age_seconds=7200,
            max_bytes=10_000_000,
            duplicate_window_seconds=30,
        )
        second = await start_relay(store, server.url, changed)
        nc = await connect(server.url)
        try:
            js = nc.jetstream()
            async with asyncio.timeout(20):
                while (info := await js.stream_info(spec.name)).config.max_age != 7200:
                    await asyncio.sleep(0.05)
            assert info.config.max_bytes == 10_000_000
            assert info.config.duplicate_window == 30
            assert info.config.subjects == [f"{spec.prefix}.>"]
            msg = await js.get_msg(spec.name, head)
            assert msg.headers is not None
            assert msg.headers[POSITION] == str(head)
        finally:
            await nc.close()
        await second.halt()
        # JetStream cannot change a stream's retention: the relay says so and waits.
        third = await start_relay(
            store, server.url, msgspec.structs.replace(changed, retention="interest")
        )
        async with asyncio.timeout(20):
            while third.relay.health.nats != "refused":
                await asyncio.sleep(0.05)
        assert "can not change retention policy" in (third.relay.health.error or "")
