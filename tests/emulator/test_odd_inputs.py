"""Inputs an integrator may send by mistake: each gets OpenAI's kind of answer, and neither the
batch nor the emulator is ever stuck."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import Running
from tests.emulator.helpers import jsonl, line, outputs, submit, wait_until


def chat(custom_id: str, schema: dict[str, Any], text: str = "hello") -> dict[str, Any]:
    fmt = {"type": "json_schema", "json_schema": {"name": "odd", "schema": schema}}
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "response_format": fmt,
    }
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


async def upload(emulator: Running, form: aiohttp.FormData | bytes, **headers: str) -> int:
    async with (
        aiohttp.ClientSession(headers={"Authorization": "Bearer sk", **headers}) as s,
        s.post(f"{emulator.url}/v1/files", data=form) as r,
    ):
        body = await r.json()
        assert set(body["error"]) == {"message", "type", "param", "code"}
        return r.status


def form(**fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("file", jsonl([line("a")]), filename="in.jsonl")
    for name, value in fields.items():
        data.add_field(name, value)
    return data


def raw_form(purpose: bytes, content_type: str) -> tuple[bytes, dict[str, str]]:
    """A multipart body built by hand: clients can send what aiohttp's FormData would not."""
    head = 'Content-Disposition: form-data; name="purpose"\r\nContent-Type: ' + content_type
    file = 'Content-Disposition: form-data; name="file"; filename="in.jsonl"'
    body = b"".join(
        [
            f"--XyZ\r\n{head}\r\n\r\n".encode(),
            purpose,
            f"\r\n--XyZ\r\n{file}\r\n\r\n".encode(),
            jsonl([line("a")]),
            b"\r\n--XyZ--\r\n",
        ]
    )
    return body, {"Content-Type": "multipart/form-data; boundary=XyZ"}


@pytest.mark.parametrize("seconds", ["²", "--5", "1e4", ""])
async def test_an_expiry_that_is_not_a_whole_number_is_a_400(
    emulator: Running, seconds: str
) -> None:
    fields = {"purpose": "batch", "expires_after[anchor]": "created_at"}
    assert await upload(emulator, form(**fields, **{"expires_after[seconds]": seconds})) == 400


async def test_a_part_in_an_unknown_charset_is_a_400(emulator: Running) -> None:
    body, headers = raw_form(b"batch", "text/plain; charset=bogus")
    assert await upload(emulator, body, **headers) == 400


async def test_a_purpose_that_is_not_utf8_is_a_400(emulator: Running) -> None:
    body, headers = raw_form(b"\xff\xfe", "text/plain; charset=utf-8")
    assert await upload(emulator, body, **headers) == 400


async def test_a_multipart_body_without_its_boundary_is_a_400(emulator: Running) -> None:
    status = await upload(emulator, b"--x\r\n", **{"Content-Type": "multipart/form-data"})
    assert status == 400


async def test_a_purpose_the_sdk_sends_as_an_odd_object_is_a_400(
    client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError):
        await client.files.create(file=("in.jsonl", b"{}"), purpose={"\x1b": False})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "schema",
    [
        {
            "type": "object",
            "properties": {"v": {"type": "number", "multipleOf": 1e-320}},
            "required": ["v"],
        },
        {
            "type": "object",
            "properties": {
                "v": {"type": "integer", "multipleOf": 1e-7, "minimum": 0.5, "maximum": 0.9}
            },
            "required": ["v"],
        },
        {"type": "array", "minItems": 3, "maxItems": 1},
    ],
)
async def test_a_schema_no_instance_can_be_built_for_is_a_400_line_not_a_stuck_batch(
    client: openai.AsyncOpenAI, schema: dict[str, Any]
) -> None:
    done, out, errors = await outputs(client, [chat("a", schema)])
    assert (done.status, out) == ("completed", [])
    error = errors[0]["response"]["body"]["error"]
    assert (errors[0]["response"]["status_code"], error["param"]) == (400, "response_format")
    assert error["message"].startswith("Invalid schema for response_format 'odd': ")


async def test_a_deeply_nested_const_is_refused_not_fatal(client: openai.AsyncOpenAI) -> None:
    deep: list[Any] = []
    for _ in range(900):
        deep = [deep]
    done, out, errors = await outputs(client, [chat("a", {"const": deep})])
    assert (done.status, out) == ("completed", [])
    assert errors[0]["response"]["status_code"] == 400


async def test_a_backtracking_pattern_does_not_stall_the_emulator(
    client: openai.AsyncOpenAI,
) -> None:
    schema = {
        "type": "object",
        "properties": {"v": {"type": "string", "pattern": "(?=a)(a+)+b", "minLength": 10}},
        "required": ["v"],
    }
    batch = await submit(client, [chat(f"r{i}", schema, "a" * 30) for i in range(5)])
    started = time.monotonic()
    while (await client.batches.retrieve(batch.id)).status != "completed":
        assert time.monotonic() - started < 10, "the batch took too long"
        await asyncio.sleep(0.01)
    listed = time.monotonic()
    await client.batches.list()
    assert time.monotonic() - listed < 2  # the emulator answers while others' batches run


async def test_an_embeddings_input_over_2048_items_fails_validation(
    client: openai.AsyncOpenAI,
) -> None:
    url = "/v1/embeddings"
    body = {"model": "text-embedding-3-small", "input": ["x"] * 2049}
    lines = [{"custom_id": "a", "method": "POST", "url": url, "body": body}]
    done = await wait_until(client, (await submit(client, lines, endpoint=url)).id, "failed")
    assert done.errors is not None
    assert [(e.code, e.param) for e in done.errors.data or []] == [
        ("array_above_max_length", "body.input")
    ]


@pytest.mark.parametrize(
    ("url", "model"),
    [
        ("/v1/embeddings", "gpt-4o-mini"),
        ("/v1/completions", "gpt-4o-mini"),
        ("/v1/chat/completions", "text-embedding-3-small"),
    ],
)
async def test_a_model_on_an_endpoint_it_does_not_serve_fails_validation(
    client: openai.AsyncOpenAI, url: str, model: str
) -> None:
    body = {
        "model": model,
        "input": "x",
        "prompt": "x",
        "messages": [{"role": "user", "content": "x"}],
    }
    lines = [{"custom_id": "a", "method": "POST", "url": url, "body": body}]
    done = await wait_until(client, (await submit(client, lines, endpoint=url)).id, "failed")
    assert done.errors is not None
    assert [(e.code, e.param, e.message) for e in done.errors.data or []] == [
        ("invalid_value", "body.model", f"The model '{model}' does not support {url}.")
    ]


async def test_dimensions_of_zero_is_below_the_minimum(client: openai.AsyncOpenAI) -> None:
    url = "/v1/embeddings"
    body = {"model": "text-embedding-3-small", "input": "x", "dimensions": 0}
    lines = [{"custom_id": "a", "method": "POST", "url": url, "body": body}]
    done = await wait_until(client, (await submit(client, lines, endpoint=url)).id, "failed")
    assert done.errors is not None
    assert [(e.code, e.param) for e in done.errors.data or []] == [
        ("integer_below_min_value", "body.dimensions")
    ]


async def test_an_expired_file_is_not_listed(client: openai.AsyncOpenAI, emulator: Running) -> None:
    f = await client.files.create(
        file=("in.jsonl", jsonl([line("a")])),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert f.id in [x.id async for x in client.files.list()]
    emulator.state.clock = lambda: time.time() + 3601
    assert f.id not in [x.id async for x in client.files.list()]


async def test_a_limit_that_is_not_a_number_is_an_invalid_type(
    client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.batches.list(extra_query={"limit": "many"})
    assert (info.value.code, info.value.param) == ("invalid_type", "limit")
    with pytest.raises(openai.BadRequestError) as info:
        await client.batches.list(limit=101)
    assert (info.value.code, info.value.param) == ("integer_above_max_value", "limit")


async def test_a_batch_whose_file_is_missing_can_still_be_cancelled(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(validating_seconds=5)
    batch = await client.batches.create(
        input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
    )
    await client.batches.cancel(batch.id)
    assert (await wait_until(client, batch.id, "cancelled")).status == "cancelled"
