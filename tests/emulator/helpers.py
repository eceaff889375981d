"""Building input files and waiting for batches, as a pipeline would."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from openai.types import Batch

from service.application.analysis import chat_body

TRANSCRIPT = (
    "[01.02.2026 09:00:00] User: Hi, I am sick and cannot come to my shift tomorrow?\n"
    "[01.02.2026 09:00:05] Assistant: Sorry to hear that. Please call your manager.\n"
    "[01.02.2026 09:01:00] User: Thanks, that is great"
)


def line(
    custom_id: str,
    *,
    model: str = "gpt-4o-mini",
    url: str = "/v1/chat/completions",
    **override: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": chat_body(model, TRANSCRIPT),
    }
    obj.update(override)
    return obj


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)


async def submit(
    client: openai.AsyncOpenAI,
    lines: list[Any],
    *,
    endpoint: Any = "/v1/chat/completions",
    **kwargs: Any,
) -> Batch:
    f = await client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return await client.batches.create(
        input_file_id=f.id, endpoint=endpoint, completion_window="24h", **kwargs
    )


async def outputs(
    client: openai.AsyncOpenAI, lines: list[Any], *, endpoint: Any = "/v1/chat/completions"
) -> tuple[Batch, list[dict[str, Any]], list[dict[str, Any]]]:
    """Run a batch to its end: the batch, its output lines and its error lines."""
    batch = await submit(client, lines, endpoint=endpoint)
    done = await wait_until(client, batch.id, "completed", "failed")
    return (
        done,
        await lines_of(client, done.output_file_id),
        await lines_of(client, done.error_file_id),
    )


async def wait_until(
    client: openai.AsyncOpenAI, batch_id: str, *statuses: str, timeout: float = 10
) -> Batch:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        b = await client.batches.retrieve(batch_id)
        if b.status in statuses:
            return b
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"batch stayed {b.status}, wanted {statuses}")
        await asyncio.sleep(0.01)


async def lines_of(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await client.files.content(file_id)
    return [json.loads(x) for x in content.text.splitlines() if x.strip()]


async def refused_batch(client: openai.AsyncOpenAI, **overrides: Any) -> openai.BadRequestError:
    """The 400 a batch creation gets when `overrides` change a valid request."""
    f = await client.files.create(file=("in.jsonl", jsonl([line("a")])), purpose="batch")
    args = {
        "input_file_id": f.id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **overrides,
    }
    with pytest.raises(openai.BadRequestError) as info:
        await client.batches.create(**args)
    return info.value
