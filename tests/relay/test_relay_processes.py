"""`batchledger serve` processes with NATS_URL: killed with -9 mid-flight, started while
NATS is down, and `batchledger relay status`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from eventstore import EventStore
from service.adapters import relay_state
from service.adapters.jetstream import StreamSpec
from service.tools.bench.core import Result
from tests.relay.harness import connect, free_port
from tests.relay.test_relay import assert_exactly_once_in_order, consume, history, relayed_to


def relay_env(db_dsn: str, url: str, spec: StreamSpec, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=db_dsn,
        NATS_URL=url,
        NATS_STREAM=spec.name,
        NATS_SUBJECT_PREFIX=spec.prefix,
        RELAY_RETRY_SECONDS="0.2",
        LOG_LEVEL="INFO",
        BATCH_CREATION_ENABLED="false",
        BATCH_POLLING_ENABLED="false",
    )
    env.update(extra)
    return env


async def serve(env: dict[str, str], *flags: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.entrypoints.cli",
        "serve",
        "--no-projections",
        *flags,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_serve_killed_mid_flight_resumes_and_the_consumer_sees_each_event_once(
    store: EventStore, db_dsn: str, nats_address: str, spec: StreamSpec
) -> None:
    head = await history(store, 12_000)
    env = relay_env(db_dsn, nats_address, spec, RELAY_WINDOW="256")
    proc = await serve(env, "--no-api")
    async with asyncio.timeout(30):
        while (await relay_state.load(store.pool, spec.name)).position == 0:
            await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    killed_at = (await relay_state.load(store.pool, spec.name)).position
    assert 0 < killed_at < head, "killed before or after its work, not during it"
    proc = await serve(env, "--no-api")
    try:
        head = await history(store, 100, tag="after")
        await relayed_to(store, spec, head)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    assert_exactly_once_in_order(await consume(nats_address, spec, head), head)


async def test_serve_answers_while_nats_is_down_and_reports_the_relay(
    store: EventStore, db_dsn: str, spec: StreamSpec, nats_address: str
) -> None:
    port, refused = free_port(), free_port()
    env = relay_env(db_dsn, f"nats://127.0.0.1:{refused}", spec, PORT=str(port))
    head = await history(store, 10)
    proc = await serve(env, "--no-schedulers")
    try:
        async with aiohttp.ClientSession() as http:
            body = await _ready(http, port)
            assert body["ok"] is True  # the API works without NATS
            relay = body["checks"]["relay"]
            assert relay.startswith("leader, NATS unreachable: NATS at nats://127.0.0.1:")
            assert "Connect call failed" in relay or "refused" in relay.lower()
        assert proc.returncode is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await proc.communicate()
    log = err.decode()
    assert '"relay.enabled"' in log
    assert "relay.interrupted" in log
    assert (await relay_state.load(store.pool, spec.name)).position == 0
    assert head > 0


async def _ready(http: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    """/readyz once the relay has tried NATS."""
    async with asyncio.timeout(30):
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                    body: dict[str, Any] = await r.json()
                    checks = body.get("checks", {})
                    if isinstance(checks, dict) and "unreachable" in str(checks.get("relay")):
                        return body
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def test_serve_without_nats_url_says_the_relay_is_off(db_dsn: str, spec: StreamSpec) -> None:
    env = relay_env(db_dsn, "", spec, PORT=str(free_port()))
    proc = await serve(env, "--no-schedulers")
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any("relay.disabled" in ln for ln in lines):
                line = await proc.stderr.readline()
                assert line, "serve ended before saying anything of the relay"
                lines.append(line.decode())
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()
    said = next(ln for ln in lines if "relay.disabled" in ln)
    assert "NATS_URL is not set" in said


async def test_two_serve_instances_race_for_the_relay_and_a_killed_leader_is_replaced(
    store: EventStore, db_dsn: str, nats_address: str, spec: StreamSpec
) -> None:
    head = await history(store, 8000)
    env = relay_env(db_dsn, nats_address, spec, RELAY_WINDOW="128", LOG_LEVEL="WARNING")
    procs = [await serve(env, "--no-api", "--no-schedulers") for _ in range(2)]
    try:
        async with asyncio.timeout(30):
            while (await relay_state.load(store.pool, spec.name)).position == 0:
                await asyncio.sleep(0.01)
        leader = await _relay_leader_pid(store)
        assert leader in {p.pid for p in procs}
        os.kill(leader, signal.SIGKILL)
        killed_at = (await relay_state.load(store.pool, spec.name)).position
        assert killed_at < head, "the leader finished before it was killed"
        head = await history(store, 100, tag="after")
        await relayed_to(store, spec, head)
        survivor = next(p for p in procs if p.pid != leader)
        assert await _relay_leader_pid(store) == survivor.pid
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
            await p.communicate()
    assert_exactly_once_in_order(await consume(nats_address, spec, head), head)


async def _relay_leader_pid(store: EventStore) -> int:
    """The process holding the relay's lock, by its connection's application_name."""
    async with asyncio.timeout(30):
        while True:
            name = await store.pool.fetchval(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE l.locktype = 'advisory' AND l.granted"
                " AND a.application_name LIKE 'batchledger-relay:%'"
            )
            if name:
                return int(name.split(":")[1])
            await asyncio.sleep(0.05)


async def test_relay_status_shows_the_checkpoint_against_the_head_and_the_stream(
    store: EventStore, db_dsn: str, nats_address: str, spec: StreamSpec
) -> None:
    head = await history(store, 10)
    await relay_state.save(store.pool, spec.name, relay_state.Checkpoint(head - 5, head - 5))
    nc = await connect(nats_address)
    await nc.jetstream().add_stream(spec.config())
    await nc.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.entrypoints.cli",
        "relay",
        "status",
        env=relay_env(db_dsn, nats_address, spec),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0
    assert f"checkpoint  {head - 5} (JetStream sequence {head - 5}" in text
    assert f"head        {head}" in text
    assert "lag         5 events" in text
    assert f"{nats_address}: 0 messages" in text


async def test_quick_relay_bench_reports_its_rate_against_nats_py_and_the_latency(
    db_dsn: str, nats_address: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.entrypoints.cli",
        "bench",
        "relay",
        "--quick",
        "--json",
        str(out),
        env={**os.environ, "DATABASE_URL": db_dsn, "NATS_URL": nats_address},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    results = msgspec.json.decode(out.read_bytes(), type=dict[str, list[Result]])["results"]
    rate = next(r for r in results if r.name.startswith("relay_events"))
    assert rate.baseline == "nats-py"
    assert rate.value > 0
    assert rate.baseline_value
    assert rate.ratio == pytest.approx(rate.value / rate.baseline_value)
    latency = {r.name: r.value for r in results if r.name.startswith("relay_latency")}
    assert 0 < latency["relay_latency_p50"] <= latency["relay_latency_p99"]
    assert "relay_events" in stdout.decode()
