"""Batch lifecycles through the real SDK: completed, failed, expired, cancelled, empty output."""

from __future__ import annotations

import openai
import pytest

from service.application.analysis import parse_analysis
from tests.conftest import Running
from tests.emulator.helpers import line, lines_of, submit, wait_until

FINISHED = ("completed", "failed", "expired", "cancelled")


async def test_batch_completes_with_a_valid_analysis_per_line_in_some_order(
    client: openai.AsyncOpenAI,
) -> None:
    created = await submit(
        client, [line(f"r{i}") for i in range(20)], metadata={"batchledger_batch_id": "b1"}
    )
    assert created.status == "validating"
    assert created.request_counts is not None
    assert created.request_counts.total == 0
    assert created.expires_at == created.created_at + 24 * 3600
    assert created.metadata == {"batchledger_batch_id": "b1"}
    done = await wait_until(client, created.id, *FINISHED)
    assert done.status == "completed"
    assert done.in_progress_at
    assert done.finalizing_at
    assert done.completed_at
    assert done.request_counts is not None
    assert (
        done.request_counts.total,
        done.request_counts.completed,
    ) == (20, 20)
    assert done.error_file_id is None
    out = await lines_of(client, done.output_file_id)
    assert sorted(x["custom_id"] for x in out) == sorted(f"r{i}" for i in range(20))
    first = out[0]
    assert first["id"].startswith("batch_req_")
    assert first["error"] is None
    assert first["response"]["status_code"] == 200
    body = first["response"]["body"]
    analysis = parse_analysis(body["choices"][0]["message"]["content"])
    assert analysis.category.value == "SICK_LEAVE_RECOVERY"
    assert analysis.sentiment.value == "POSITIVE"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


async def test_same_input_gives_the_same_answer_and_token_counts(
    client: openai.AsyncOpenAI,
) -> None:
    a = await wait_until(client, (await submit(client, [line("r1")])).id, "completed")
    b = await wait_until(client, (await submit(client, [line("r1")])).id, "completed")
    la, lb = (
        (await lines_of(client, a.output_file_id))[0],
        (await lines_of(client, b.output_file_id))[0],
    )
    assert la["response"]["body"]["choices"] == lb["response"]["body"]["choices"]
    assert la["response"]["body"]["usage"] == lb["response"]["body"]["usage"]


async def test_plain_request_gets_a_plain_reply(client: openai.AsyncOpenAI) -> None:
    plain = line("p1")
    plain["body"] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hello there"}],
    }
    done = await wait_until(client, (await submit(client, [plain])).id, "completed")
    (out,) = await lines_of(client, done.output_file_id)
    assert out["response"]["body"]["choices"][0]["message"]["content"].startswith("Emulated reply")


async def test_forced_failure_fails_the_batch_with_errors(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(outcome_queue=["fail"])
    done = await wait_until(client, (await submit(client, [line("r1")])).id, *FINISHED)
    assert done.status == "failed"
    assert done.failed_at
    assert done.errors is not None
    assert done.errors.data
    assert done.output_file_id is None
    assert done.error_file_id is None


async def test_expired_batch_has_partial_output_and_batch_expired_lines(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(outcome="expire", partial_lines=3)
    done = await wait_until(
        client, (await submit(client, [line(f"r{i}") for i in range(10)])).id, *FINISHED
    )
    assert done.status == "expired"
    assert done.expired_at
    assert len(await lines_of(client, done.output_file_id)) == 3
    errors = await lines_of(client, done.error_file_id)
    assert len(errors) == 7
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert all(e["response"] is None for e in errors)
    assert done.request_counts is not None
    assert (
        done.request_counts.completed,
        done.request_counts.failed,
    ) == (3, 7)


async def test_client_cancellation_moves_through_cancelling_to_cancelled_with_partial_output(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(in_progress_seconds=30, cancelling_seconds=0.2, partial_lines=2)
    created = await submit(client, [line(f"r{i}") for i in range(5)])
    await wait_until(client, created.id, "in_progress")
    cancelling = await client.batches.cancel(created.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at
    done = await wait_until(client, created.id, "cancelled")
    assert done.cancelled_at
    assert len(await lines_of(client, done.output_file_id)) == 2
    assert {e["error"]["code"] for e in await lines_of(client, done.error_file_id)} == {
        "batch_cancelled"
    }


async def test_forced_cancel_outcome_cancels_without_a_client_call(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(outcome="cancel", partial_lines=1)
    done = await wait_until(client, (await submit(client, [line("a"), line("b")])).id, *FINISHED)
    assert done.status == "cancelled"
    assert len(await lines_of(client, done.output_file_id)) == 1


async def test_cancelling_a_finished_batch_is_a_conflict(client: openai.AsyncOpenAI) -> None:
    done = await wait_until(client, (await submit(client, [line("r1")])).id, "completed")
    with pytest.raises(openai.ConflictError) as info:
        await client.batches.cancel(done.id)
    assert info.value.status_code == 409


async def test_completed_with_no_successes_has_no_output_file(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(line_failure_rate=1.0)
    done = await wait_until(
        client, (await submit(client, [line("r1"), line("r2")])).id, "completed"
    )
    assert done.output_file_id is None
    errors = await lines_of(client, done.error_file_id)
    assert [e["response"]["status_code"] for e in errors] == [500, 500]
    assert errors[0]["response"]["body"]["error"]["type"] == "server_error"


async def test_stuck_finalizing_never_completes(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(outcome="stuck_finalizing")
    b = await wait_until(client, (await submit(client, [line("r1")])).id, "finalizing")
    import asyncio

    await asyncio.sleep(0.2)
    assert (await client.batches.retrieve(b.id)).status == "finalizing"


async def test_step_timings_hold_the_batch_in_validating(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(validating_seconds=30)
    created = await submit(client, [line("r1")])
    import asyncio

    await asyncio.sleep(0.1)
    assert (await client.batches.retrieve(created.id)).status == "validating"


async def test_a_50000_line_batch_completes(client: openai.AsyncOpenAI) -> None:
    import time

    t = time.perf_counter()
    created = await submit(client, [line(f"r{i}") for i in range(50_000)])
    done = await wait_until(client, created.id, *FINISHED, timeout=120)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert done.request_counts.completed == 50_000
    out = await lines_of(client, done.output_file_id)
    assert len(out) == 50_000
    print(f"50,000-line batch: {time.perf_counter() - t:.1f}s")
