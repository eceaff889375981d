"""A stuck writer: API writes answer 503 writer_busy, /metrics shows it, the scheduler retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from eventstore import EventStore, NewEvent
from service.adapters.tokens import Role, create_token
from service.config import ConfigError, Settings, load_settings
from service.entrypoints.api.app import create_app
from service.entrypoints.api.server import build_deps
from service.entrypoints.runtime import Runtime
from service.entrypoints.scheduler import Scheduler
from service.logs import get_logger
from tests.conftest import Running
from tests.integration.api_fixtures import Api
from tests.integration.test_eventstore import ev, writer_lock_held
from tests.integration.test_intake import GOOD, row, write_csv

BASE = "/api/admin/legacy"
TIMEOUT = 0.2


@pytest.fixture
async def api(db_dsn: str, emulator: Running) -> AsyncIterator[Api]:
    """The admin API on a runtime opened with WRITER_LOCK_TIMEOUT_SECONDS=0.2."""
    settings = load_settings({"WRITER_LOCK_TIMEOUT_SECONDS": str(TIMEOUT)})
    client = openai.AsyncOpenAI(base_url=f"{emulator.url}/v1", api_key="sk-test", max_retries=0)
    runtime = await Runtime.open(settings, db_dsn, client)
    deps = await build_deps(runtime.store, runtime.app, runtime.metrics, settings)
    test_client = TestClient(TestServer(create_app(deps)))
    await test_client.start_server()
    pool = runtime.store.pool
    tokens = {
        "admin": await create_token(pool, "admin-token", Role.admin),
        "support": await create_token(pool, "support-token", Role.support),
        "scoped": await create_token(pool, "acme-token", Role.support, companies=["acme"]),
    }
    yield Api(test_client, runtime, tokens)
    await test_client.close()
    await runtime.close()


async def enqueue(api: Api, session: str) -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
    body = {
        "companyId": "acme",
        "sessionId": session,
        "transcript": "[01.10.2026 08:40:19] User: hi",
    }
    async with asyncio.timeout(10):  # answered, not left waiting on the lock
        r = await api.client.post(f"{BASE}/requests", json=body, headers=api.auth("admin"))
        return r.status, dict(r.headers), await r.json()


async def lock_figures(api: Api, role: str) -> dict[str, float]:
    r = await api.client.get("/metrics", headers=api.auth(role))
    assert r.status == 200
    return {
        sample.name + str(sample.labels.get("le", "")): sample.value
        for family in text_string_to_metric_families(await r.text())
        if family.name.startswith("batchledger_writer_lock")
        for sample in family.samples
    }


async def test_an_api_write_answers_503_writer_busy_while_the_writer_lock_is_held(
    api: Api, db_dsn: str
) -> None:
    async with writer_lock_held(db_dsn):
        status, headers, body = await enqueue(api, "S-1")
    assert status == 503
    assert headers["Retry-After"] == "1"  # the timeout, rounded up to whole seconds
    assert body["ok"] is False
    assert body["error"]["code"] == "writer_busy"
    assert "writer lock was not free within 0.2 s" in body["error"]["message"]
    written = await api.runtime.store.pool.fetchval("SELECT count(*) FROM events")
    assert written == 0
    # The same request, once the lock is free: queued, as new (nothing was half-written).
    status, _, body = await enqueue(api, "S-1")
    assert (status, body["created"]) == (201, True)


async def test_metrics_show_writer_lock_waits_and_timeouts_to_unscoped_tokens_only(
    api: Api, db_dsn: str
) -> None:
    before = await lock_figures(api, "support")
    assert before["batchledger_writer_lock_timeouts_total"] == 0
    async with writer_lock_held(db_dsn):
        assert (await enqueue(api, "S-1"))[0] == 503
    after = await lock_figures(api, "support")
    assert after["batchledger_writer_lock_waits_total"] == 1
    assert after["batchledger_writer_lock_timeouts_total"] == 1
    assert after["batchledger_writer_lock_wait_seconds_count"] == 1
    assert after["batchledger_writer_lock_wait_seconds_sum"] >= TIMEOUT
    assert after["batchledger_writer_lock_wait_seconds_bucket+Inf"] == 1
    assert after["batchledger_writer_lock_wait_seconds_bucket0.1"] == 0
    assert await lock_figures(api, "scoped") == {}, "whole-service figures, not a company's"


def test_the_writer_lock_timeout_setting_must_be_above_zero() -> None:
    assert Settings().writer_lock_timeout_seconds == 5.0
    assert load_settings({"WRITER_LOCK_TIMEOUT_SECONDS": "2.5"}).writer_lock_timeout_seconds == 2.5
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(ConfigError, match="WRITER_LOCK_TIMEOUT_SECONDS"):
            load_settings({"WRITER_LOCK_TIMEOUT_SECONDS": bad})


async def test_a_scheduler_run_that_meets_a_busy_writer_lock_warns_and_retries_next_tick(
    db_dsn: str,
) -> None:
    store = await EventStore.open(db_dsn, max_size=2, writer_lock_timeout=TIMEOUT)
    appended: list[NewEvent] = []

    async def job() -> int:
        if appended:
            return 0
        event = ev()
        await store.append("thing-1", 0, [event])
        appended.append(event)
        return 1

    stop = asyncio.Event()
    try:
        with capture_logs() as logs:
            scheduler = Scheduler("writer-lock-test", job, 0, db_dsn, get_logger("scheduler"))
            async with writer_lock_held(db_dsn):
                run = asyncio.create_task(scheduler.run(stop))
                async with asyncio.timeout(10):
                    while not any(e["event"] == "scheduler.writer_busy" for e in logs):
                        await asyncio.sleep(0.02)
            async with asyncio.timeout(10):  # the lock is free: a later tick does the work
                while not appended:
                    await asyncio.sleep(0.02)
            stop.set()
            await run
    finally:
        stop.set()
        await store.close()
    busy = next(e for e in logs if e["event"] == "scheduler.writer_busy")
    assert busy["log_level"] == "warning"
    assert "writer lock was not free within 0.2 s" in busy["error"]
    assert not [e for e in logs if e["log_level"] == "error"], "no traceback for a busy lock"
    assert await count_events(db_dsn) == 1


async def count_events(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()


async def test_an_import_that_meets_a_busy_writer_lock_stops_clearly_and_loses_nothing(
    db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.entrypoints.cli import main

    (tmp_path / "t.txt").write_text(GOOD)
    export = write_csv(tmp_path / "export.csv", [row("S1", "t.txt"), row("S2", "t.txt")])
    args = ["import", str(export), "--company", "acme", "--database-url", db_dsn]
    monkeypatch.setenv("WRITER_LOCK_TIMEOUT_SECONDS", str(TIMEOUT))
    async with writer_lock_held(db_dsn), asyncio.timeout(30):
        assert await asyncio.to_thread(main, args) == 1
    err = capsys.readouterr().err
    assert "writer lock was not free within 0.2 s" in err
    assert "run the same import again" in err
    assert await count_events(db_dsn) == 0
    assert await asyncio.to_thread(main, args) == 0  # the lock is free: all of it, once
    assert await count_events(db_dsn) == 2
