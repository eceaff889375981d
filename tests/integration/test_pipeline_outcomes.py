"""Every outcome OpenAI can produce leaves each request in the right state, reason and attempt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import openai
import pytest

from projections import queries
from service.application.ledger import Actor
from service.config import Settings
from service.entrypoints.runtime import Runtime
from service.tools.synthetic import ledger, queue_many
from statemachine.commands import RequeueRequest
from statemachine.request import REQUESTS
from tests.conftest import Running

TRANSCRIPT = "[01.10.2026 09:00:00] User: When is my next shift? Thanks!"
MakeRuntime = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def runtime(db_dsn: str, emulator: Running) -> AsyncIterator[MakeRuntime]:
    made: list[Runtime] = []

    async def make(**overrides: object) -> Runtime:
        values = {
            "batch_creation_interval_seconds": 0.0,
            "batch_polling_interval_seconds": 0.0,
            **overrides,
        }
        client = openai.AsyncOpenAI(
            base_url=f"{emulator.url}/v1",
            api_key="sk-test",
            max_retries=0,
            _strict_response_validation=True,
        )
        rt = await Runtime.open(Settings(**values), db_dsn, client)  # type: ignore[arg-type]
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.close()


async def queue(
    rt: Runtime, n: int, *, company: str = "acme", model: str = "gpt-4o-mini", prefix: str = "r"
) -> list[str]:
    agg = ledger(rt.store)
    return await queue_many(
        agg, n, company=company, model=model, prefix=prefix, transcript=TRANSCRIPT
    )


async def settle(rt: Runtime) -> None:
    async with asyncio.timeout(60):
        await rt.run_until_idle()


async def first_batch_processed(rt: Runtime) -> None:
    """Run the schedulers until one batch is processed (to change knobs before the retry)."""
    processed = "SELECT count(*) FROM events WHERE event_type = 'BatchProcessed'"
    async with asyncio.timeout(30):
        while await rt.store.pool.fetchval(processed) == 0:
            await rt.creator.run_once()
            await rt.catch_up()
            await rt.poller.run_once()


async def rows(rt: Runtime) -> dict[str, dict[str, object]]:
    return {r["request_id"]: dict(r) for r in await rt.store.pool.fetch("SELECT * FROM requests")}


async def history(rt: Runtime, rid: str) -> list[str]:
    return [e.type for e in await rt.store.read_stream(REQUESTS.stream_id(rid))]


async def emulator_batches_per_ours(emulator: Running) -> dict[str, int]:
    counts: dict[str, int] = {}
    for b in emulator.state.batches.values():
        key = (b.metadata or {}).get("batchledger_batch_id", "?")
        counts[key] = counts.get(key, 0) + 1
    return counts


async def test_two_companies_and_two_models_make_four_batches(runtime: MakeRuntime) -> None:
    rt = await runtime()
    for company in ("acme", "globex"):
        for model in ("gpt-4o-mini", "gpt-4o"):
            await queue(rt, 3, company=company, model=model, prefix=f"{company}-{model}-")
    await settle(rt)
    batches = await rt.store.pool.fetch(
        "SELECT company_id, model, request_count, status FROM batches ORDER BY 1, 2"
    )
    assert [(b["company_id"], b["model"], b["request_count"], b["status"]) for b in batches] == [
        ("acme", "gpt-4o", 3, "PROCESSED"),
        ("acme", "gpt-4o-mini", 3, "PROCESSED"),
        ("globex", "gpt-4o", 3, "PROCESSED"),
        ("globex", "gpt-4o-mini", 3, "PROCESSED"),
    ]


async def test_batch_max_requests_splits_one_group_into_several_batches(
    runtime: MakeRuntime,
) -> None:
    rt = await runtime(batch_max_requests=4)
    await queue(rt, 10)
    await settle(rt)
    sizes = [
        r["request_count"]
        for r in await rt.store.pool.fetch("SELECT request_count FROM batches ORDER BY seq")
    ]
    assert sizes == [4, 4, 2]
    assert (await queries.summary(rt.store.pool)).processing_complete == 10


async def test_batch_max_bytes_splits_a_group_by_size(runtime: MakeRuntime) -> None:
    rt = await runtime(batch_max_bytes=6_000)
    await queue(rt, 6)
    await settle(rt)
    assert await rt.store.pool.fetchval("SELECT count(*) FROM batches") >= 2
    assert (await queries.summary(rt.store.pool)).processing_complete == 6


async def test_expired_batch_keeps_partial_output_and_retries_the_rest(
    runtime: MakeRuntime, emulator: Running
) -> None:
    await emulator.knobs(outcome_queue=["expire"], partial_lines=2)
    rt = await runtime()
    await queue(rt, 5)
    await settle(rt)
    final = await rows(rt)
    assert {r["status"] for r in final.values()} == {"PROCESSING_COMPLETE"}
    assert sorted(r["attempts"] for r in final.values()) == [1, 1, 2, 2, 2]
    retried = [rid for rid, r in final.items() if r["attempts"] == 2]
    assert (await history(rt, retried[0]))[:4] == [
        "RequestQueued",
        "RequestBatched",
        "RequestFailed",
        "RequestRequeued",
    ]
    codes = await rt.store.pool.fetch(
        "SELECT data->>'code' AS code FROM events WHERE event_type = 'RequestFailed'"
    )
    assert {c["code"] for c in codes} == {"batch_expired"}
    assert [
        b["status"] for b in await rt.store.pool.fetch("SELECT status FROM batches ORDER BY seq")
    ] == ["PROCESSED", "PROCESSED"]


async def test_cancelled_batch_keeps_partial_output_and_retries_the_rest(
    runtime: MakeRuntime, emulator: Running
) -> None:
    await emulator.knobs(outcome_queue=["cancel"], partial_lines=1)
    rt = await runtime()
    await queue(rt, 3)
    await settle(rt)
    final = await rows(rt)
    assert sorted(r["attempts"] for r in final.values()) == [1, 2, 2]
    assert {r["status"] for r in final.values()} == {"PROCESSING_COMPLETE"}
    codes = await rt.store.pool.fetch(
        "SELECT DISTINCT data->>'code' AS code FROM events WHERE event_type = 'RequestFailed'"
    )
    assert [c["code"] for c in codes] == ["batch_cancelled"]


async def test_failed_validation_fails_requests_for_good(runtime: MakeRuntime) -> None:
    rt = await runtime()
    await queue(rt, 3, model="gpt-imaginary")
    await settle(rt)
    final = await rows(rt)
    assert {(r["status"], r["last_error_code"], r["attempts"]) for r in final.values()} == {
        ("PROCESSING_FAILED", "model_not_found", 1)
    }
    batch = await rt.store.pool.fetchrow("SELECT status, last_error FROM batches")
    assert batch["status"] == "FAILED"
    assert "model_not_found" in batch["last_error"]


async def test_token_limit_is_retried_until_attempts_run_out(
    runtime: MakeRuntime, emulator: Running
) -> None:
    await emulator.knobs(enqueued_token_limit=10)
    rt = await runtime(request_max_attempts=3)
    await queue(rt, 2)
    await settle(rt)
    final = await rows(rt)
    assert {(r["status"], r["last_error_code"], r["attempts"]) for r in final.values()} == {
        ("PROCESSING_FAILED", "token_limit_exceeded", 3)
    }
    assert await rt.store.pool.fetchval("SELECT count(*) FROM batches WHERE status = 'FAILED'") == 3


async def test_only_an_error_file_retries_then_fails_and_an_admin_requeue_recovers(
    runtime: MakeRuntime, emulator: Running
) -> None:
    await emulator.knobs(line_failure_rate=1.0)
    rt = await runtime(request_max_attempts=2)
    ids = await queue(rt, 2)
    await settle(rt)
    final = await rows(rt)
    assert {(r["status"], r["last_error_code"], r["attempts"]) for r in final.values()} == {
        ("PROCESSING_FAILED", "server_error", 2)
    }
    out = await rt.store.pool.fetch("SELECT output_file_id, error_file_id FROM batches")
    assert all(b["output_file_id"] is None and b["error_file_id"] for b in out)
    await emulator.knobs(line_failure_rate=0.0)
    for rid in ids:
        await rt.app.ledger.execute(REQUESTS, rid, RequeueRequest(), Actor("ops"))
    await settle(rt)
    assert {r["status"] for r in (await rows(rt)).values()} == {"PROCESSING_COMPLETE"}


async def test_malformed_and_unknown_output_lines_are_recorded_not_applied(
    runtime: MakeRuntime, emulator: Running
) -> None:
    await emulator.knobs(malformed_output_lines=2, unknown_custom_id_lines=1)
    rt = await runtime()
    await queue(rt, 4)
    await settle(rt)
    assert (await queries.summary(rt.store.pool)).processing_complete == 4
    rejected = await rt.store.pool.fetch(
        "SELECT data->>'kind' AS kind FROM events WHERE event_type = 'BatchOutputLineRejected'"
    )
    assert sorted(r["kind"] for r in rejected) == ["malformed", "malformed", "unknown_custom_id"]
    assert await rt.store.pool.fetchval("SELECT rejected_lines FROM batches") == 3


async def test_requests_without_any_line_fail_as_missing_and_are_retried(
    runtime: MakeRuntime, emulator: Running
) -> None:
    await emulator.knobs(omitted_lines=2)
    rt = await runtime()
    await queue(rt, 3)
    await first_batch_processed(rt)
    await emulator.knobs(omitted_lines=0)
    await settle(rt)
    missing = await rt.store.pool.fetch(
        "SELECT data->>'request_id' AS r FROM events"
        " WHERE event_type = 'RequestFailed' AND data->>'code' = 'missing'"
    )
    assert len(missing) == 2
    assert {r["status"] for r in (await rows(rt)).values()} == {"PROCESSING_COMPLETE"}


@pytest.mark.parametrize("status", [429, 500])
async def test_api_errors_defer_the_step_and_lose_nothing(
    runtime: MakeRuntime, emulator: Running, status: int
) -> None:
    await emulator.knobs(fail_next_calls=5, fail_status=status, retry_after_seconds=0)
    rt = await runtime()
    await queue(rt, 4)
    await settle(rt)
    assert (await queries.summary(rt.store.pool)).processing_complete == 4
    assert set((await emulator_batches_per_ours(emulator)).values()) == {1}
    assert rt.gateway.errors.get(f"http_{status}", 0) == 5


async def test_invalid_model_output_fails_the_request_as_retryable_and_the_retry_completes(
    runtime: MakeRuntime, emulator: Running
) -> None:
    await emulator.knobs(invalid_output_lines=2)
    rt = await runtime()
    await queue(rt, 3)
    await first_batch_processed(rt)
    await emulator.knobs(invalid_output_lines=0)
    await settle(rt)
    failures = await rt.store.pool.fetch(
        "SELECT data->>'code' AS code, (data->>'retryable')::bool AS retryable,"
        " data->>'message' AS message FROM events WHERE event_type = 'RequestFailed'"
    )
    assert [(f["code"], f["retryable"]) for f in failures] == [("invalid_output", True)] * 2
    assert "not JSON" in failures[0]["message"]
    final = await rows(rt)
    assert sorted(r["attempts"] for r in final.values()) == [1, 2, 2]
    assert {r["status"] for r in final.values()} == {"PROCESSING_COMPLETE"}
