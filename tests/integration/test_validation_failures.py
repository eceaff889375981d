"""A batch OpenAI fails in validation: the guilty lines fail, the innocent ones are retried.

PostgreSQL, the emulator over HTTP and the real SDK. Line n of a batch's input file is
its n-th request (`Batch.request_ids`); OpenAI names lines 1-based in `errors.data`.
"""

from __future__ import annotations

import asyncio

import openai

from projections import queries
from service.entrypoints.runtime import Runtime
from statemachine.batch import BATCHES, Batch
from tests.conftest import Running
from tests.integration.test_pipeline_outcomes import (
    MakeRuntime,
    emulator_batches_per_ours,
    queue,
    rows,
    runtime,  # noqa: F401  (the fixture)
    settle,
)

INVALID_ELSEWHERE = "batch_invalid_elsewhere"


async def released_batch(rt: Runtime, count: int = 1) -> Batch:
    """Run creator and poller until OpenAI has failed `count` batches and their requests are
    released; the last of them, as its events leave it."""
    released = (
        "SELECT stream_id FROM events WHERE event_type = 'BatchRequestsReleased'"
        " ORDER BY position DESC OFFSET $1 - 1 LIMIT 1"
    )
    async with asyncio.timeout(30):
        while (stream := await rt.store.pool.fetchval(released, count)) is None:
            await rt.catch_up()
            await rt.creator.run_once()
            await rt.catch_up()
            await rt.poller.run_once()
    await rt.catch_up()
    batch = await rt.app.ledger.load(BATCHES, stream.removeprefix("batch-"))
    assert batch is not None
    return batch


async def failures(rt: Runtime) -> dict[str, tuple[str, str, bool]]:
    """Each request's RequestFailed events so far: code, message, retryable (the last one)."""
    found = await rt.store.pool.fetch(
        "SELECT data->>'request_id' AS rid, data->>'code' AS code, data->>'message' AS message,"
        " (data->>'retryable')::bool AS retryable FROM events"
        " WHERE event_type = 'RequestFailed' ORDER BY position"
    )
    return {f["rid"]: (f["code"], f["message"], f["retryable"]) for f in found}


async def test_one_refused_line_fails_its_request_for_good_and_the_others_complete_next_time(
    runtime: MakeRuntime,  # noqa: F811
    emulator: Running,
) -> None:
    await emulator.knobs(rejected_input_lines=[2])
    rt = await runtime()
    ids = await queue(rt, 5)
    batch = await released_batch(rt)
    assert sorted(batch.request_ids) == sorted(ids)
    guilty, innocent = batch.request_ids[1], [*batch.request_ids[:1], *batch.request_ids[2:]]
    after_one = await rows(rt)
    assert (
        after_one[guilty]["status"],
        after_one[guilty]["last_error_code"],
        after_one[guilty]["attempts"],
    ) == ("PROCESSING_FAILED", "invalid_request", 1)
    assert {(after_one[rid]["status"], after_one[rid]["attempts"]) for rid in innocent} == {
        ("PENDING_BATCHING", 1)
    }
    failed = await failures(rt)
    assert failed[guilty][0] == "invalid_request"
    assert failed[guilty][2] is False
    assert {failed[rid] for rid in innocent} == {
        (INVALID_ELSEWHERE, "not run: OpenAI refused line 2 (invalid_request) of this batch", True)
    }

    await emulator.knobs(rejected_input_lines=[])
    await settle(rt)
    final = await rows(rt)
    assert set(final) == set(ids)  # nothing lost
    assert {(final[rid]["status"], final[rid]["attempts"]) for rid in innocent} == {
        ("PROCESSING_COMPLETE", 2)
    }
    assert (final[guilty]["status"], final[guilty]["attempts"]) == ("PROCESSING_FAILED", 1)
    summary = await queries.summary(rt.store.pool)
    assert (summary.processing_complete, summary.processing_failed) == (4, 1)
    assert (summary.pending_batching, summary.batching_in_progress) == (0, 0)
    batches = await rt.store.pool.fetch("SELECT status FROM batches ORDER BY seq")
    assert [b["status"] for b in batches] == ["FAILED", "PROCESSED"]


async def test_an_input_file_gone_before_validation_ended_sends_every_request_back(
    runtime: MakeRuntime,  # noqa: F811
    emulator: Running,
    client: openai.AsyncOpenAI,
) -> None:
    await emulator.knobs(validating_seconds=1.0)
    rt = await runtime()
    ids = await queue(rt, 3)
    await rt.catch_up()
    await rt.creator.run_once()
    await rt.catch_up()
    (bid,) = [r["batch_id"] for r in await rt.store.pool.fetch("SELECT batch_id FROM batches")]
    submitted = await rt.app.ledger.load(BATCHES, bid)
    assert submitted is not None
    assert submitted.input_file_id is not None
    assert (await client.files.delete(submitted.input_file_id)).deleted
    await emulator.knobs(validating_seconds=0.0)  # for the next batch
    batch = await released_batch(rt)
    assert batch.batch_id == bid
    after_one = await rows(rt)
    assert {(r["status"], r["attempts"]) for r in after_one.values()} == {("PENDING_BATCHING", 1)}
    assert [(e.code, e.param, e.line) for e in batch.errors] == [
        ("invalid_request", "file_id", None)
    ]
    failed = await failures(rt)
    assert {(code, retryable) for code, _, retryable in failed.values()} == {
        ("invalid_request", True)
    }
    assert all(submitted.input_file_id in message for _, message, _ in failed.values())

    await settle(rt)
    final = await rows(rt)
    assert set(final) == set(ids)
    assert {(r["status"], r["attempts"]) for r in final.values()} == {("PROCESSING_COMPLETE", 2)}
    assert sorted((await emulator_batches_per_ours(emulator)).values()) == [1, 1]


async def test_an_unsupported_model_fails_every_request_for_good_and_releases_the_batch(
    runtime: MakeRuntime,  # noqa: F811
    emulator: Running,
) -> None:
    await emulator.knobs(models=["gpt-4o"])
    rt = await runtime()
    ids = await queue(rt, 4, model="gpt-4o-mini")
    await settle(rt)
    final = await rows(rt)
    assert set(final) == set(ids)
    assert {(r["status"], r["last_error_code"], r["attempts"]) for r in final.values()} == {
        ("PROCESSING_FAILED", "model_not_found", 1)
    }
    assert all("gpt-4o-mini" in str(r["last_error_message"]) for r in final.values())
    failed = await failures(rt)
    assert {(code, retryable) for code, _, retryable in failed.values()} == {
        ("model_not_found", False)
    }
    released = await rt.store.pool.fetch(
        "SELECT (data->>'requeued')::int AS requeued, (data->>'failed')::int AS failed"
        " FROM events WHERE event_type = 'BatchRequestsReleased'"
    )
    assert [(r["requeued"], r["failed"]) for r in released] == [(0, 4)]
    (bid,) = [b["batch_id"] for b in await rt.store.pool.fetch("SELECT batch_id FROM batches")]
    batch = await rt.app.ledger.load(BATCHES, bid)
    assert batch is not None
    assert (batch.state.value, batch.released) == ("FAILED", True)
    assert [(e.line, e.code, e.param) for e in batch.errors] == [
        (n, "model_not_found", "body.model") for n in range(1, len(ids) + 1)
    ]


async def test_requests_refused_elsewhere_again_and_again_keep_their_attempts(
    runtime: MakeRuntime,  # noqa: F811
    emulator: Running,
) -> None:
    """With one line refused in every batch, each round fails only that line's request: the
    others outlive more failed batches than REQUEST_MAX_ATTEMPTS and complete once OpenAI
    accepts them (a rule refusing 1 line in 1,000 must not wear out the other 999)."""
    await emulator.knobs(rejected_input_lines=[1])
    rt = await runtime(request_max_attempts=2)
    ids = await queue(rt, 5)
    for n in (1, 2, 3):
        await released_batch(rt, n)
    await emulator.knobs(rejected_input_lines=[])
    await settle(rt)
    final = await rows(rt)
    assert set(final) == set(ids)
    statuses = sorted(r["status"] for r in final.values())
    assert statuses == ["PROCESSING_COMPLETE"] * 2 + ["PROCESSING_FAILED"] * 3
    survivors = [r for r in final.values() if r["status"] == "PROCESSING_COMPLETE"]
    assert {r["attempts"] for r in survivors} == {4}  # three refused batches, then the fourth
    assert {r["last_error_code"] for r in final.values() if r["status"] == "PROCESSING_FAILED"} == {
        "invalid_request"
    }
