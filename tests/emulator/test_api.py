"""The HTTP surface: shapes, errors and statuses, files, pagination and injected faults."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import Running
from tests.emulator.helpers import jsonl, line, lines_of, refused_batch, submit, wait_until


async def test_file_upload_retrieve_list_content_and_delete(client: openai.AsyncOpenAI) -> None:
    data = jsonl([line("a")])
    f = await client.files.create(file=("in.jsonl", data), purpose="batch")
    assert f.id.startswith("file-")
    assert f.bytes == len(data)
    assert f.purpose == "batch"
    assert (await client.files.retrieve(f.id)).filename == "in.jsonl"
    assert (await client.files.content(f.id)).content == data
    assert f.id in [x.id async for x in client.files.list()]
    deleted = await client.files.delete(f.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(f.id)


async def test_upload_refuses_a_file_that_is_not_jsonl(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.files.create(file=("in.csv", b"a,b\n"), purpose="batch")
    assert info.value.code == "invalid_file_format"


async def test_upload_refuses_a_file_over_the_size_cap(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(max_file_bytes=100)
    with pytest.raises(openai.BadRequestError) as info:
        await client.files.create(file=("in.jsonl", b"x" * 101), purpose="batch")
    assert info.value.code == "file_too_large"


async def test_create_batch_without_required_parameter_is_a_400(emulator: Running) -> None:
    async with (
        aiohttp.ClientSession(headers={"Authorization": "Bearer sk"}) as s,
        s.post(f"{emulator.url}/v1/batches", json={"endpoint": "/v1/chat/completions"}) as r,
    ):
        assert r.status == 400
        body = await r.json()
        assert body["error"]["code"] == "missing_required_parameter"
        assert body["error"]["param"] == "input_file_id"
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert r.headers["x-request-id"].startswith("req_")


async def test_create_batch_with_a_bad_window_is_invalid_value(
    client: openai.AsyncOpenAI,
) -> None:
    refused = await refused_batch(client, completion_window="48h")
    assert (refused.code, refused.param) == ("invalid_value", "completion_window")


@pytest.mark.parametrize(
    ("metadata", "code", "param"),
    [
        ({f"k{i}": "v" for i in range(17)}, "object_above_max_properties", "metadata"),
        ({"k" * 65: "v"}, "invalid_value", "metadata"),
        ({"k": "v" * 513}, "string_above_max_length", "metadata.k"),
        ({"k": None}, "invalid_type", "metadata.k"),
    ],
)
async def test_create_batch_with_metadata_out_of_bounds_names_the_problem(
    client: openai.AsyncOpenAI, metadata: dict[str, Any], code: str, param: str
) -> None:
    refused = await refused_batch(client, metadata=metadata)
    assert (refused.code, refused.param) == (code, param)


async def test_unknown_batch_is_a_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await client.batches.retrieve("batch_nope")


async def test_calls_without_an_api_key_are_a_401(emulator: Running) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"{emulator.url}/v1/batches") as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "invalid_api_key"


async def test_list_pages_newest_first_and_async_for_walks_every_page(
    client: openai.AsyncOpenAI,
) -> None:
    created = [(await submit(client, [line("a")])).id for _ in range(7)]
    page = await client.batches.list(limit=3)
    assert [b.id for b in page.data] == created[::-1][:3]
    assert page.has_more is True
    assert [b.id async for b in client.batches.list(limit=2)] == created[::-1]
    nxt = await client.batches.list(limit=3, after=created[-3])
    assert [b.id for b in nxt.data] == created[::-1][3:6]


async def test_list_limit_out_of_range_is_a_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        await client.batches.list(limit=101)


async def test_429_knob_answers_with_retry_after_and_the_sdk_retries_past_it(
    emulator: Running,
) -> None:
    await emulator.knobs(fail_next_calls=1, fail_status=429, retry_after_seconds=0)
    strict = openai.AsyncOpenAI(
        base_url=f"{emulator.url}/v1", api_key="sk", max_retries=0, _strict_response_validation=True
    )
    with pytest.raises(openai.RateLimitError) as info:
        await strict.batches.list()
    assert info.value.response.headers["retry-after"] == "0"
    await emulator.knobs(fail_next_calls=1, fail_status=429, retry_after_seconds=0)
    retrying = openai.AsyncOpenAI(
        base_url=f"{emulator.url}/v1", api_key="sk", max_retries=2, _strict_response_validation=True
    )
    assert (await retrying.batches.list()).data == []
    await strict.close()
    await retrying.close()


async def test_500_knob_fails_the_next_calls(client: openai.AsyncOpenAI, emulator: Running) -> None:
    await emulator.knobs(fail_next_calls=2, fail_status=500)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await client.batches.list()
    assert (await client.batches.list()).data == []


async def test_malformed_and_unknown_custom_id_lines_knobs_add_lines_to_the_output(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(malformed_output_lines=2, unknown_custom_id_lines=1)
    done = await wait_until(client, (await submit(client, [line("a")])).id, "completed")
    raw = (await client.files.content(done.output_file_id)).text.splitlines()  # type: ignore[arg-type]
    assert len(raw) == 4
    import json

    parsed = []
    for text in raw:
        try:
            parsed.append(json.loads(text)["custom_id"])
        except ValueError:
            parsed.append("<malformed>")
    assert sorted(parsed) == ["<malformed>", "<malformed>", "a", "unknown-0"]
    assert done.request_counts is not None
    assert done.request_counts.completed == 1


async def test_line_failure_rate_fails_a_share_of_lines_reproducibly_under_a_seed(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    async def failed_ids() -> list[str]:
        await emulator.knobs(line_failure_rate=0.5, seed=7)
        emulator.state.reset(emulator.state.knobs)
        done = await wait_until(
            client, (await submit(client, [line(f"r{i}") for i in range(40)])).id, "completed"
        )
        return sorted(e["custom_id"] for e in await lines_of(client, done.error_file_id))

    first = await failed_ids()
    assert 5 < len(first) < 35
    assert await failed_ids() == first


async def test_knobs_endpoint_refuses_unknown_or_invalid_knobs(emulator: Running) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{emulator.url}/_emulator/knobs", json={"outcome": "explode"}) as r:
            assert r.status == 400
        async with s.post(f"{emulator.url}/_emulator/knobs", json={"no_such_knob": 1}) as r:
            assert r.status == 400
        async with s.get(f"{emulator.url}/_emulator/knobs") as r:
            assert (await r.json())["outcome"] == "complete"


async def test_omitted_lines_knob_leaves_requests_without_any_line(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(omitted_lines=2)
    done = await wait_until(
        client, (await submit(client, [line("a"), line("b"), line("c")])).id, "completed"
    )
    assert [x["custom_id"] for x in await lines_of(client, done.output_file_id)] == ["c"]
    assert done.error_file_id is None


async def test_invalid_output_lines_knob_breaks_the_analysis_of_the_first_answers(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    import json

    from service.application.analysis import InvalidAnalysis, parse_analysis

    await emulator.knobs(invalid_output_lines=1)
    done = await wait_until(client, (await submit(client, [line("a"), line("b")])).id, "completed")
    contents = {
        x["custom_id"]: x["response"]["body"]["choices"][0]["message"]["content"]
        for x in await lines_of(client, done.output_file_id)
    }
    with pytest.raises(InvalidAnalysis):
        parse_analysis(contents["a"])
    assert json.loads(contents["b"])["category"]
