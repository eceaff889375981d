"""The pipeline on PostgreSQL and the emulator through the SDK: intake to PROCESSING_COMPLETE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from projections import queries
from service.application.ledger import Actor
from service.config import Settings
from service.entrypoints.intake import Importer
from service.entrypoints.runtime import Runtime
from tests.conftest import Running

SAMPLE = Path(__file__).resolve().parents[2] / "service" / "tools" / "samples" / "sessions.csv"


def settings(**overrides: object) -> Settings:
    base = {
        "batch_creation_interval_seconds": 0.0,
        "batch_polling_interval_seconds": 0.0,
        "request_max_attempts": 3,
    }
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def make_runtime(db_dsn: str, emulator: Running) -> AsyncIterator[object]:
    made: list[Runtime] = []

    async def make(**overrides: object) -> Runtime:
        client = openai.AsyncOpenAI(
            base_url=f"{emulator.url}/v1",
            api_key="sk-test",
            max_retries=0,
            _strict_response_validation=True,
        )
        rt = await Runtime.open(settings(**overrides), db_dsn, client)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.close()


async def settle(rt: Runtime, seconds: float = 60) -> None:
    async with asyncio.timeout(seconds):
        await rt.run_until_idle()


async def test_shipped_sample_imports_and_every_request_completes_with_its_analysis(
    make_runtime,
) -> None:  # type: ignore[no-untyped-def]
    rt: Runtime = await make_runtime()
    importer = Importer(rt.app.ledger, Actor("import"))
    report = await importer.run(str(SAMPLE), "acme", "gpt-4o-mini")
    assert (report.rows, report.queued, report.problems) == (50, 50, [])
    await settle(rt)
    summary = await queries.summary(rt.store.pool)
    assert summary == queries.StatusCounts(
        pending_batching=0,
        batching_in_progress=0,
        processing_complete=50,
        processing_failed=0,
    )
    analysed = await rt.store.pool.fetch(
        "SELECT language, sentiment, category FROM session_analyses"
    )
    assert len(analysed) == 50
    assert {r["language"] for r in analysed} >= {"en", "nl", "de"}
    assert {r["sentiment"] for r in analysed} == {"POSITIVE", "NEUTRAL", "NEGATIVE"}
    detail = await queries.request_detail(
        rt.store.pool, (await rt.store.pool.fetchval("SELECT request_id FROM requests LIMIT 1"))
    )
    assert detail is not None
    assert detail.total_tokens > 0
    assert detail.cost_micro_usd > 0
    again = await importer.run(str(SAMPLE), "acme", "gpt-4o-mini")
    assert (again.queued, again.already_queued) == (0, 50)
    await rt.catch_up()
    assert (await queries.summary(rt.store.pool)).processing_complete == 50
    batches = await rt.store.pool.fetch("SELECT status FROM batches")
    assert [b["status"] for b in batches] == ["PROCESSED"]
