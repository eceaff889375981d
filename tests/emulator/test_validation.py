"""Input validation as OpenAI does it: each rule fails the batch with its line in errors.data."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import Running
from tests.emulator.helpers import line, submit, wait_until


async def failed_errors(
    client: openai.AsyncOpenAI, lines: list[Any]
) -> list[tuple[str | None, int | None, str | None]]:
    done = await wait_until(client, (await submit(client, lines)).id, "failed", "completed")
    assert done.status == "failed", "the batch should fail validation"
    assert done.failed_at
    assert done.errors is not None
    assert done.errors.data
    return [(e.code, e.line, e.param) for e in done.errors.data]


async def test_invalid_json_line_is_reported_with_its_line(client: openai.AsyncOpenAI) -> None:
    assert await failed_errors(client, [line("a"), b"{nope"]) == [("invalid_json_line", 2, None)]


@pytest.mark.parametrize("missing", ["custom_id", "method", "url", "body"])
async def test_missing_required_parameter_is_reported(
    client: openai.AsyncOpenAI, missing: str
) -> None:
    bad = line("b")
    del bad[missing]
    assert await failed_errors(client, [line("a"), bad]) == [
        ("missing_required_parameter", 2, missing)
    ]


async def test_url_that_differs_from_the_batch_endpoint_is_invalid(
    client: openai.AsyncOpenAI,
) -> None:
    assert await failed_errors(client, [line("a", url="/v1/embeddings")]) == [
        ("invalid_url", 1, "url")
    ]


async def test_duplicate_custom_id_is_reported(client: openai.AsyncOpenAI) -> None:
    assert await failed_errors(client, [line("a"), line("b"), line("a")]) == [
        ("duplicate_custom_id", 3, "custom_id")
    ]


async def test_more_than_one_model_is_refused(client: openai.AsyncOpenAI) -> None:
    assert await failed_errors(client, [line("a"), line("b", model="gpt-4o")]) == [
        ("mismatched_model", 2, "body.model")
    ]


async def test_more_lines_than_the_limit_are_refused(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(max_lines=3)
    assert await failed_errors(client, [line(f"r{i}") for i in range(4)]) == [
        ("too_many_requests", None, None)
    ]


async def test_unknown_model_is_refused(client: openai.AsyncOpenAI) -> None:
    assert await failed_errors(client, [line("a", model="gpt-imaginary")]) == [
        ("model_not_found", 1, "body.model")
    ]


async def test_enqueued_token_limit_fails_the_batch_that_would_exceed_it(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(enqueued_token_limit=1000, in_progress_seconds=30)
    first = await submit(client, [line("a")])
    await wait_until(client, first.id, "in_progress")
    errors = await failed_errors(client, [line(f"r{i}") for i in range(10)])
    assert errors == [("token_limit_exceeded", None, None)]
