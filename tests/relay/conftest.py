"""Fixtures of the relay tests: a reachable NATS (skipped, saying why, only where there is
none and not on CI), streams of their own, relays run in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import nats.js.errors
import pytest

from eventstore import EventStore
from service.adapters.jetstream import Link, RelayUnavailable, StreamSpec
from service.entrypoints.relay import Relay, RelayConfig
from tests.relay.harness import NATS_SERVER, connect, nats_url, unique_spec


@pytest.fixture(scope="session")
async def nats_address() -> str:
    """The machine's NATS with JetStream; CI must have it, elsewhere its absence skips."""
    url = nats_url()
    try:
        link = await Link.open(url, creds=None, window=1, wait=2.0, where=url)
    except RelayUnavailable as exc:
        reason = f"no NATS at {url} ({exc}); start nats-server -js or set NATS_URL"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    await link.close()
    return url


@pytest.fixture
def nats_server_bin() -> str:
    """nats-server, for tests that need a server with a config of their own."""
    if not os.path.exists(NATS_SERVER):
        reason = f"{NATS_SERVER} not found (apt-get install nats-server)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return NATS_SERVER


@pytest.fixture
async def spec(nats_address: str) -> AsyncIterator[StreamSpec]:
    """A stream of this test's own, deleted after it."""
    chosen = unique_spec()
    yield chosen
    nc = await connect(nats_address)
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jetstream().delete_stream(chosen.name)
    await nc.close()


@dataclass
class Running:
    """A relay running in the test's loop."""

    relay: Relay
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def halt(self) -> None:
        self.stop.set()
        async with asyncio.timeout(20):
            await self.task


@pytest.fixture
async def start_relay() -> AsyncIterator[Callable[..., object]]:
    """Start relays (stopped after the test): store, url, spec, and RelayConfig fields."""
    running: list[Running] = []

    async def start(store: EventStore, url: str, spec: StreamSpec, **options: Any) -> Running:
        options.setdefault("retry_seconds", 0.2)
        options.setdefault("ack_timeout", 3.0)
        relay = Relay(store, RelayConfig(url, None, spec, **options))
        stop = asyncio.Event()
        r = Running(relay, stop, asyncio.ensure_future(relay.run(stop)))
        running.append(r)
        return r

    yield start
    for r in running:
        await r.halt()
