"""Real `batchledger serve` processes: killed at each step boundary; two sharing one database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import IO

import pytest

from eventstore import EventStore
from service.faults import FAULT_EXIT_CODE
from service.tools.synthetic import ledger, queue_many
from tests.conftest import Running

TRANSCRIPT = "[01.10.2026 09:00:00] User: I am sick today, can I stay home? Thanks"
FAULT_POINTS = [
    "creator.after_plan",
    "creator.after_upload_started",
    "creator.after_upload",
    "creator.after_record_upload",
    "creator.after_create",
    "poller.after_observe",
    "ingest.before_append",
    "ingest.after_append",
]


def serve_env(db_dsn: str, emulator: Running, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BATCHLEDGER_FAULTS"}
    env.update(
        DATABASE_URL=db_dsn,
        OPENAI_BASE_URL=f"{emulator.url}/v1",
        OPENAI_API_KEY="sk-test",
        BATCH_CREATION_INTERVAL_SECONDS="0",
        BATCH_POLLING_INTERVAL_SECONDS="0",
        LOG_LEVEL="WARNING",
        OPENAI_MAX_RETRIES="0",
    )
    env.update(extra)
    return env


async def start_serve(
    env: dict[str, str], *, api: bool = False, stderr: int | IO[bytes] = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """`batchledger serve` as a process; the admin API (on env PORT) only when `api`.

    A long run that logs much should pass a file as `stderr`: a pipe nobody reads fills up
    and then blocks the process on its next log line.
    """
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.entrypoints.cli",
        "serve",
        *([] if api else ["--no-api"]),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def queue(store: EventStore, n: int) -> list[str]:
    return await queue_many(ledger(store), n, transcript=TRANSCRIPT)


async def wait_all_complete(store: EventStore, n: int, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while True:
            done = await store.pool.fetchval(
                "SELECT count(*) FROM events WHERE event_type = 'RequestCompleted'"
            )
            if done >= n:
                return
            await asyncio.sleep(0.1)


async def assert_batched_once_and_no_duplicate_openai_batch(
    store: EventStore, emulator: Running, n: int
) -> None:
    per_request = await store.pool.fetch(
        "SELECT stream_id, count(*) AS n FROM events"
        " WHERE event_type = 'RequestBatched' GROUP BY stream_id"
    )
    assert len(per_request) == n
    assert {r["n"] for r in per_request} == {1}, "a request was put in two batches"
    completed = await store.pool.fetch(
        "SELECT stream_id, count(*) AS n FROM events"
        " WHERE event_type = 'RequestCompleted' GROUP BY stream_id"
    )
    assert len(completed) == n
    assert {r["n"] for r in completed} == {1}
    ours: dict[str, int] = {}
    for b in emulator.state.batches.values():
        key = (b.metadata or {})["batchledger_batch_id"]
        ours[key] = ours.get(key, 0) + 1
    assert set(ours.values()) == {1}, f"duplicate OpenAI batches: {ours}"
    planned = await store.pool.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'BatchPlanned'"
    )
    assert len(ours) == planned


@pytest.fixture
async def crash_store(db_dsn: str) -> AsyncIterator[EventStore]:
    store = await EventStore.open(db_dsn, max_size=4)
    yield store
    await store.close()


@pytest.mark.slow
@pytest.mark.parametrize("point", FAULT_POINTS)
async def test_a_process_killed_at_a_step_boundary_restarts_and_loses_nothing(
    point: str, db_dsn: str, emulator: Running, crash_store: EventStore
) -> None:
    await queue(crash_store, 20)
    crashing = await start_serve(serve_env(db_dsn, emulator, BATCHLEDGER_FAULTS=point))
    async with asyncio.timeout(60):
        code = await crashing.wait()
    assert code == FAULT_EXIT_CODE, (await crashing.stderr.read()).decode()[-2000:]  # type: ignore[union-attr]
    restarted = await start_serve(serve_env(db_dsn, emulator))
    try:
        await wait_all_complete(crash_store, 20, 60)
    finally:
        await stop(restarted)
    await assert_batched_once_and_no_duplicate_openai_batch(crash_store, emulator, 20)


@pytest.mark.slow
async def test_two_serve_processes_on_one_database_batch_every_request_once(
    db_dsn: str, emulator: Running, crash_store: EventStore
) -> None:
    n = 5_000
    await queue(crash_store, n)
    env = serve_env(db_dsn, emulator, BATCH_MAX_REQUESTS="500")
    procs = [await start_serve(env), await start_serve(env)]
    try:
        await wait_all_complete(crash_store, n, 180)
    finally:
        for p in procs:
            await stop(p)
    await assert_batched_once_and_no_duplicate_openai_batch(crash_store, emulator, n)


async def test_sigterm_ends_open_event_streams_and_the_process_exits_promptly(
    db_dsn: str, emulator: Running, crash_store: EventStore
) -> None:
    import aiohttp

    from service.adapters.tokens import Role, create_token
    from service.net import free_port

    token = await create_token(crash_store.pool, "watcher", Role.support)
    port = free_port()
    env = serve_env(db_dsn, emulator, PORT=str(port), SSE_HEARTBEAT_SECONDS="30")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.entrypoints.cli",
        "serve",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/api/admin/legacy/events/stream"
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        stream = await http.get(url, headers={"Authorization": f"Bearer {token}"})
                        break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
            async with stream:
                assert await stream.content.readline() == b": connected\n"
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(10):  # it took two minutes with one stream open
                    rest = await stream.content.read()
                    code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, (await proc.stderr.read()).decode()[-2000:]  # type: ignore[union-attr]
    assert rest in (b"", b"\n")


async def test_serve_whose_port_is_taken_exits_1_before_any_scheduler_works(
    db_dsn: str, emulator: Running, crash_store: EventStore
) -> None:
    import socket

    await queue(crash_store, 3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = serve_env(db_dsn, emulator, PORT=str(port))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.entrypoints.cli",
            "serve",
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    assert proc.returncode == 1
    text = err.decode()
    assert f"the admin API cannot listen on 127.0.0.1:{port}" in text
    assert "Traceback" not in text
    assert "Task was destroyed but it is pending" not in text
    planned = await crash_store.pool.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'BatchPlanned'"
    )
    assert planned == 0, "a batch was planned by a serve that could not start"
    assert emulator.state.files == {}
    assert emulator.state.batches == {}


async def test_serve_whose_openai_key_is_refused_exits_1_before_any_scheduler_works(
    db_dsn: str, emulator: Running, crash_store: EventStore
) -> None:
    from aiohttp import web

    from service.net import free_port

    async def refuse(request: web.Request) -> web.Response:
        error = {"message": "Incorrect API key provided.", "type": "invalid_request_error"}
        return web.json_response({"error": {**error, "code": None}}, status=401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    openai_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", openai_port).start()
    await queue(crash_store, 3)
    refusing = f"http://127.0.0.1:{openai_port}/v1"
    env = serve_env(db_dsn, emulator, OPENAI_BASE_URL=refusing, PORT=str(free_port()))
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.entrypoints.cli", "serve",
            env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    finally:
        await runner.cleanup()
    text = err.decode()
    assert proc.returncode == 1, text[-2000:]
    assert "refuses OPENAI_API_KEY" in text
    assert "never awaited" not in text
    assert "Traceback" not in text
    planned = await crash_store.pool.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'BatchPlanned'"
    )
    assert planned == 0


async def test_serve_says_at_start_what_it_runs_and_what_is_disabled_and_why(
    db_dsn: str, emulator: Running
) -> None:
    import json

    env = serve_env(db_dsn, emulator, LOG_LEVEL="INFO", BATCH_CREATION_ENABLED="false")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.entrypoints.cli", "serve", "--no-api", "--no-projections",
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    lines = []
    try:
        async with asyncio.timeout(30):
            assert proc.stderr is not None
            while not any(line.get("event") == "serve.started" for line in lines):
                raw = await proc.stderr.readline()
                assert raw, "serve exited before it started"
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(raw))
    finally:
        await stop(proc)
    disabled = {
        (line.get("scheduler"), line["reason"])
        for line in lines
        if line.get("event") in ("scheduler.disabled", "projections.disabled")
    }
    assert disabled == {
        ("batch-creator", "BATCH_CREATION_ENABLED=false"),
        (None, "--no-projections"),
    }
    (started,) = [line for line in lines if line["event"] == "serve.started"]
    assert started["schedulers"] == ["batch-poller"]
    assert (started["projections"], started["api"]) == (False, None)
