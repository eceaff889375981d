"""What an operator relies on: one bad batch never stops the others, and logs name the ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai.types import Batch
from structlog.testing import capture_logs

from service.adapters.openai_gateway import OpenAIGateway
from service.config import Settings
from service.entrypoints.runtime import Runtime
from service.tools.synthetic import ledger, queue_many
from tests.conftest import Running

TRANSCRIPT = "[01.10.2026 09:00:00] User: Can I swap my Friday shift? Thanks!"


@pytest.fixture
async def rt(db_dsn: str, emulator: Running) -> AsyncIterator[Runtime]:
    client = openai.AsyncOpenAI(
        base_url=f"{emulator.url}/v1",
        api_key="sk-test",
        max_retries=0,
        _strict_response_validation=True,
    )
    settings = Settings(
        batch_creation_interval_seconds=0.0,
        batch_polling_interval_seconds=0.0,
        request_max_attempts=1,
        scheduler_backoff_seconds=60.0,
    )
    runtime = await Runtime.open(settings, db_dsn, client)
    yield runtime
    await runtime.close()


async def submit(rt: Runtime, companies: list[str], n: int = 2, model: str = "gpt-4o-mini") -> None:
    """Queue n requests per company (one batch each) and submit them all."""
    for company in companies:
        await queue_many(
            ledger(rt.store), n, company=company, model=model, prefix=company, transcript=TRANSCRIPT
        )
    await rt.catch_up()
    await rt.creator.run_once()
    await rt.catch_up()


async def batch_of(rt: Runtime, company: str) -> tuple[str, str]:
    row = await rt.store.pool.fetchrow(
        "SELECT batch_id, openai_batch_id FROM batches WHERE company_id = $1", company
    )
    assert row is not None
    return row["batch_id"], row["openai_batch_id"]


async def statuses(rt: Runtime) -> dict[str, str]:
    await rt.catch_up()
    rows = await rt.store.pool.fetch("SELECT company_id, status FROM batches")
    return {r["company_id"]: r["status"] for r in rows}


class OneOddBatch(OpenAIGateway):
    """Our gateway, except that retrieving one batch raises as an odd SDK response would."""

    def __init__(self, inner: OpenAIGateway, odd: str) -> None:
        super().__init__(inner.client)
        self.odd = odd
        self.tries = 0

    async def retrieve(self, openai_batch_id: str) -> Batch:
        if openai_batch_id == self.odd:
            self.tries += 1
            raise ValueError("1 validation error for Batch: request_counts.total")
        return await super().retrieve(openai_batch_id)


async def test_a_batch_whose_poll_raises_is_backed_off_while_the_others_finish(
    rt: Runtime,
) -> None:
    await submit(rt, ["acme", "bolt", "cove"])
    odd_bid, odd_openai = await batch_of(rt, "bolt")
    odd = OneOddBatch(rt.gateway, odd_openai)
    rt.app.polling.gateway = odd
    now = [0.0]
    rt.poller.isolation.backoff.clock = lambda: now[0]
    with capture_logs() as logs:
        for _ in range(3):  # one batch raising never ends a run: the others get all theirs
            await rt.poller.run_once()
            await rt.catch_up()
    assert await statuses(rt) == {"acme": "PROCESSED", "bolt": "VALIDATING", "cove": "PROCESSED"}
    assert odd.tries == 1, "a failed batch is not retried before its backoff ends"
    (crash,) = [e for e in logs if e["event"] == "batch.poll.crashed"]
    assert crash["batch_id"] == odd_bid
    assert crash["log_level"] == "error"
    assert crash["error"] == "ValueError"
    assert "request_counts" in crash["reason"]
    assert crash["retry_in_seconds"] == 60.0
    failures = rt.metrics.item_failures.labels(step="batch.poll")._value.get()
    assert failures == 1
    now[0] = 61.0  # the backoff is over, and the odd response is gone
    rt.app.polling.gateway = rt.gateway
    async with asyncio.timeout(30):
        while (await statuses(rt))["bolt"] != "PROCESSED":
            await rt.poller.run_once()


async def test_an_unknown_openai_status_is_recorded_raw_and_the_other_batches_finish(
    rt: Runtime, emulator: Running
) -> None:
    await emulator.knobs(odd_status="paused", odd_status_retrieves=2)
    await submit(rt, ["acme"])
    await emulator.knobs(odd_status=None)
    await submit(rt, ["bolt"])
    bid, _ = await batch_of(rt, "acme")
    # The SDK's strict validation rejects a status outside its Literal: that is the
    # "odd SDK response" case; this test needs the raw status, as the production client
    # (not strict) reads it.
    rt.app.polling.gateway = OpenAIGateway(
        openai.AsyncOpenAI(base_url=f"{emulator.url}/v1", api_key="sk-test", max_retries=0)
    )
    with capture_logs() as logs:
        await rt.poller.run_once()
    assert (await statuses(rt))["bolt"] == "PROCESSED"
    assert (await statuses(rt))["acme"] == "VALIDATING"
    history = [e.type for e in await rt.store.read_stream(f"batch-{bid}")]
    assert history.count("BatchStatusUnrecognized") == 1
    row = await rt.store.pool.fetchrow("SELECT openai_status FROM batches WHERE batch_id=$1", bid)
    assert row["openai_status"] == "paused"
    (odd,) = [e for e in logs if e["event"] == "batch.status_unrecognized"]
    assert (odd["batch_id"], odd["status"], odd["log_level"]) == (bid, "paused", "warning")
    assert rt.metrics.unrecognized_statuses.labels(status="paused")._value.get() == 1
    gauge = 'batchledger_batches_in_unrecognized_status{openai_status="paused"} 1.0'
    assert gauge in (await rt.metrics.render_for(rt.store, None)).decode()
    async with asyncio.timeout(30):
        while (await statuses(rt))["acme"] != "PROCESSED":
            await rt.poller.run_once()
    await rt.app.polling.gateway.client.close()


def _failed_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "request.failed"]


async def test_every_failed_line_is_logged_with_its_request_batch_company_and_reason(
    rt: Runtime, emulator: Running
) -> None:
    await emulator.knobs(line_failure_rate=1.0)
    await submit(rt, ["acme"], n=3)
    bid, _ = await batch_of(rt, "acme")
    with capture_logs() as logs:
        async with asyncio.timeout(30):
            await rt.run_until_idle()
    failed = _failed_lines(logs)
    assert sorted(e["request_id"] for e in failed) == ["acme0", "acme1", "acme2"]
    for e in failed:
        assert (e["batch_id"], e["company_id"], e["log_level"]) == (bid, "acme", "error")
        assert e["code"]
        assert e["message"]
        assert e["requeued"] is False


async def test_beyond_a_hundred_failed_lines_a_batch_logs_a_sample_and_a_summary(
    rt: Runtime, emulator: Running
) -> None:
    await emulator.knobs(line_failure_rate=1.0)
    await submit(rt, ["acme"], n=130)
    with capture_logs() as logs:
        async with asyncio.timeout(60):
            await rt.run_until_idle()
    assert len(_failed_lines(logs)) == 100
    (summary,) = [e for e in logs if e["event"] == "batch.failures_summarized"]
    assert (summary["failed"], summary["logged"], summary["requeued"]) == (130, 100, 0)
    assert sum(summary["codes"].values()) == 130


async def test_a_batch_openai_failed_logs_its_reason_at_error_and_each_request(
    rt: Runtime,
) -> None:
    await submit(rt, ["acme"], model="gpt-unknown-model")
    bid, _ = await batch_of(rt, "acme")
    with capture_logs() as logs:
        async with asyncio.timeout(30):
            await rt.run_until_idle()
    (failed,) = [e for e in logs if e["event"] == "batch.failed_at_openai"]
    assert failed["log_level"] == "error"
    assert failed["batch_id"] == bid
    assert any("model_not_found" in reason for reason in failed["errors"]), failed
    lines = _failed_lines(logs)
    assert {e["code"] for e in lines} == {"model_not_found"}
    assert len(lines) == 2


class OneOddUpload(OpenAIGateway):
    """Our gateway, except that uploading one company's file raises."""

    def __init__(self, inner: OpenAIGateway, odd: str) -> None:
        super().__init__(inner.client)
        self.odd = odd

    async def upload(self, filename: str, content: bytes) -> str:
        if self.odd.encode() in content:
            raise ValueError("an odd file")
        return await super().upload(filename, content)


async def test_a_batch_whose_submission_raises_is_backed_off_while_the_others_are_sent(
    rt: Runtime,
) -> None:
    rt.app.batching.gateway = OneOddUpload(rt.gateway, '"custom_id":"bolt')
    with capture_logs() as logs:
        await submit(rt, ["acme", "bolt", "cove"])
    assert await statuses(rt) == {"acme": "VALIDATING", "bolt": "UPLOADING", "cove": "VALIDATING"}
    (crash,) = [e for e in logs if e["event"] == "batch.submit.crashed"]
    assert crash["error"] == "ValueError"
    assert crash["log_level"] == "error"
    bid, _ = await batch_of(rt, "bolt")
    assert crash["batch_id"] == bid
    assert rt.metrics.item_failures.labels(step="batch.submit")._value.get() == 1
    rt.app.batching.gateway = rt.gateway
    rt.creator.isolation.backoff.clock = lambda: 1e12  # its backoff is over
    await rt.creator.run_once()
    assert (await statuses(rt))["bolt"] == "VALIDATING"
