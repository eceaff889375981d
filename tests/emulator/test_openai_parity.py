"""The emulator answers as OpenAI does, point by point, through the real SDK."""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Any

import aiohttp
import jsonschema
import openai
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from tests.conftest import Running
from tests.emulator.helpers import jsonl, line, outputs, refused_batch, submit, wait_until

SUPPORTED = (
    "Supported values are: '/v1/chat/completions', '/v1/completions', '/v1/embeddings', "
    "and '/v1/responses'."
)


def said(exc: openai.APIStatusError) -> str:
    """The error's message as the API wrote it (the SDK prefixes its own)."""
    assert isinstance(exc.body, dict)
    return str(exc.body["message"])


def request(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def chat(custom_id: str, **body: Any) -> dict[str, Any]:
    return request(custom_id, "/v1/chat/completions", {"model": "gpt-4o-mini", **body})


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def errors_of(client: openai.AsyncOpenAI, lines: list[Any]) -> list[tuple[Any, ...]]:
    done = await wait_until(client, (await submit(client, lines)).id, "failed", "completed")
    assert done.status == "failed", "the batch should fail validation"
    assert done.errors is not None
    assert done.errors.data
    return [(e.line, e.code, e.param, e.message) for e in done.errors.data]


# -- 1. empty required strings are a 400, never a 500 ------------------------------------


@pytest.mark.parametrize(
    ("field", "code"),
    [("completion_window", "invalid_value"), ("endpoint", "invalid_value")],
)
async def test_an_empty_enumerated_parameter_is_a_400_naming_it(
    client: openai.AsyncOpenAI, field: str, code: str
) -> None:
    refused = await refused_batch(client, **{field: ""})
    assert refused.status_code == 400
    assert refused.code == code
    assert refused.param == field
    assert said(refused).startswith("Invalid value: ''. Supported values are:")


async def test_an_empty_input_file_id_is_an_empty_string_error(
    client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.batches.create(
            input_file_id="", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert info.value.code == "empty_string"
    assert info.value.param == "input_file_id"
    assert said(info.value) == (
        "Invalid 'input_file_id': empty string. Expected a string with minimum length 1, "
        "but got an empty string instead."
    )


# -- 2. every endpoint answers its own body ----------------------------------------------


async def test_completions_are_answered_with_text_completion_objects(
    client: openai.AsyncOpenAI,
) -> None:
    url = "/v1/completions"
    lines = [request("a", url, {"model": "gpt-3.5-turbo-instruct", "prompt": ["One", "Two"]})]
    done, out, errors = await outputs(client, lines, endpoint=url)
    assert done.status == "completed", done.errors
    assert errors == []
    body = Completion.model_validate(out[0]["response"]["body"], strict=True)
    assert body.object == "text_completion"
    assert [c.index for c in body.choices] == [0, 1]
    assert body.usage is not None
    assert body.usage.total_tokens == body.usage.prompt_tokens + body.usage.completion_tokens
    assert done.usage is not None
    assert done.usage.input_tokens == body.usage.prompt_tokens


@pytest.mark.parametrize(
    ("model", "dimensions", "length"),
    [
        ("text-embedding-3-small", None, 1536),
        ("text-embedding-3-large", None, 3072),
        ("text-embedding-3-small", 256, 256),
        ("text-embedding-ada-002", None, 1536),
    ],
)
async def test_embeddings_are_vectors_of_the_models_dimension(
    client: openai.AsyncOpenAI, model: str, dimensions: int | None, length: int
) -> None:
    url = "/v1/embeddings"
    body: dict[str, Any] = {"model": model, "input": ["hello there", "hello there", "bye"]}
    if dimensions:
        body["dimensions"] = dimensions
    done, out, _ = await outputs(client, [request("a", url, body)], endpoint=url)
    assert done.status == "completed", done.errors
    result = CreateEmbeddingResponse.model_validate(out[0]["response"]["body"], strict=True)
    assert result.object == "list"
    assert [len(e.embedding) for e in result.data] == [length] * 3
    first, same, other = (e.embedding for e in result.data)
    assert first == same != other  # the same text always embeds the same
    assert abs(sum(x * x for x in first) - 1) < 1e-4  # unit length, as OpenAI's are
    assert result.usage.total_tokens == result.usage.prompt_tokens > 0


async def test_embeddings_in_base64_decode_to_the_same_float32_vector(
    client: openai.AsyncOpenAI,
) -> None:
    url = "/v1/embeddings"
    base = {"model": "text-embedding-3-small", "input": "hello", "dimensions": 8}
    lines = [
        request("f", url, base),
        request("b", url, {**base, "encoding_format": "base64"}),
    ]
    _, out, _ = await outputs(client, lines, endpoint=url)
    by_id = {x["custom_id"]: x["response"]["body"]["data"][0]["embedding"] for x in out}
    decoded = base64.b64decode(by_id["b"])
    assert list(struct.unpack("<8f", decoded)) == pytest.approx(by_id["f"], abs=1e-6)


async def test_dimensions_on_a_model_without_them_is_a_400_line(
    client: openai.AsyncOpenAI,
) -> None:
    url = "/v1/embeddings"
    body = {"model": "text-embedding-ada-002", "input": "x", "dimensions": 8}
    done, out, errors = await outputs(client, [request("a", url, body)], endpoint=url)
    assert (done.status, out) == ("completed", [])
    assert errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["message"] == (
        "This model does not support specifying dimensions."
    )
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (0, 1)


async def test_responses_are_answered_with_response_objects(client: openai.AsyncOpenAI) -> None:
    url = "/v1/responses"
    lines = [request("a", url, {"model": "gpt-4.1-mini", "input": "Say hello"})]
    done, out, _ = await outputs(client, lines, endpoint=url)
    assert done.status == "completed", done.errors
    body = Response.model_validate(out[0]["response"]["body"])
    assert body.object == "response"
    assert body.status == "completed"
    assert "Say hello" in body.output_text
    assert body.usage is not None
    assert body.usage.total_tokens == body.usage.input_tokens + body.usage.output_tokens


async def test_chat_answers_n_choices(client: openai.AsyncOpenAI) -> None:
    _, out, _ = await outputs(client, [chat("a", messages=user("hi"), n=3)])
    body = ChatCompletion.model_validate(out[0]["response"]["body"])
    assert [c.index for c in body.choices] == [0, 1, 2]


# -- 3. Structured Outputs for any schema, and json_object mode ---------------------------

INVOICE = {
    "type": "object",
    "properties": {
        "customer": {"type": "string", "minLength": 3},
        "total": {"type": "number", "minimum": 0, "maximum": 1000},
        "status": {"type": "string", "enum": ["open", "paid"]},
        "lines": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}},
                "required": ["sku"],
                "additionalProperties": False,
            },
        },
        "note": {"type": ["string", "null"]},
    },
    "required": ["customer", "total", "status", "lines", "note"],
    "additionalProperties": False,
}


def schema_format(schema: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "invoice", "strict": strict, "schema": schema},
    }


async def test_structured_outputs_are_valid_against_any_strict_schema(
    client: openai.AsyncOpenAI,
) -> None:
    lines = [
        chat(f"r{i}", messages=user(text), response_format=schema_format(INVOICE))
        for i, text in enumerate(["Invoice for Alice Smith", "Invoice for Bob Jones"])
    ]
    done, out, errors = await outputs(client, lines)
    assert (done.status, errors) == ("completed", [])
    answers = {}
    for x in out:
        content = ChatCompletion.model_validate(x["response"]["body"]).choices[0].message.content
        assert content is not None
        answers[x["custom_id"]] = json.loads(content)
    for instance in answers.values():
        jsonschema.validate(instance, INVOICE)
    assert answers["r0"] != answers["r1"]  # derived from the input
    again = await outputs(client, [lines[0]])
    content = again[1][0]["response"]["body"]["choices"][0]["message"]["content"]
    assert json.loads(content) == answers["r0"]  # and deterministic


async def test_structured_outputs_in_the_responses_api_follow_the_schema(
    client: openai.AsyncOpenAI,
) -> None:
    url = "/v1/responses"
    fmt = {"type": "json_schema", "name": "invoice", "strict": True, "schema": INVOICE}
    body = {"model": "gpt-4.1", "input": "Invoice for Carol", "text": {"format": fmt}}
    _, out, _ = await outputs(client, [request("a", url, body)], endpoint=url)
    jsonschema.validate(
        json.loads(Response.model_validate(out[0]["response"]["body"]).output_text), INVOICE
    )


async def test_a_strict_schema_openai_refuses_is_a_400_line_naming_the_problem(
    client: openai.AsyncOpenAI,
) -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    done, out, errors = await outputs(
        client, [chat("a", messages=user("x"), response_format=schema_format(loose))]
    )
    assert (done.status, out) == ("completed", [])
    assert errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["message"] == (
        "Invalid schema for response_format 'invoice': In context=(), 'additionalProperties' "
        "is required to be supplied and to be false."
    )


async def test_json_object_mode_answers_a_json_object(client: openai.AsyncOpenAI) -> None:
    fmt = {"type": "json_object"}
    lines = [
        chat("ok", messages=user("Reply in JSON please"), response_format=fmt),
        chat("no", messages=user("Reply please"), response_format=fmt),
    ]
    done, out, errors = await outputs(client, lines)
    assert done.status == "completed"
    assert isinstance(
        json.loads(out[0]["response"]["body"]["choices"][0]["message"]["content"]), dict
    )
    assert errors[0]["custom_id"] == "no"
    assert errors[0]["response"]["body"]["error"] == {
        "message": "'messages' must contain the word 'json' in some form, to use "
        "'response_format' of type 'json_object'.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": None,
    }


# -- 4. streaming lines fail validation -------------------------------------------------


async def test_a_streaming_line_fails_the_batch_in_validation(client: openai.AsyncOpenAI) -> None:
    assert await errors_of(
        client, [line("a"), line("b", body={**line("b")["body"], "stream": True})]
    ) == [
        (
            2,
            "streaming_unsupported",
            "body.stream",
            "Chat Completions: Streaming is not supported in the Batch API.",
        )
    ]


# -- 5. every offending body is reported -----------------------------------------------


async def test_body_validation_reports_every_offending_line(client: openai.AsyncOpenAI) -> None:
    lines = [
        chat("ok", messages=user("hi")),
        request("no-model", "/v1/chat/completions", {"messages": user("hi")}),
        chat("no-messages"),
        chat("no-role", messages=[{"content": "hi"}]),
        chat("no-content", messages=[{"role": "user"}]),
        chat("bad-role", messages=[{"role": "bot", "content": "hi"}]),
        chat("empty", messages=[]),
    ]
    assert await errors_of(client, lines) == [
        (2, "missing_required_parameter", "body.model", "Model parameter is required."),
        (3, "missing_required_parameter", "body.messages", "Messages parameter is required."),
        (
            4,
            "missing_required_parameter",
            "body.messages[0].role",
            "Missing required parameter: 'body.messages[0].role'.",
        ),
        (
            5,
            "missing_required_parameter",
            "body.messages[0].content",
            "Missing required parameter: 'body.messages[0].content'.",
        ),
        (
            6,
            "invalid_value",
            "body.messages[0].role",
            "Invalid value: 'bot'. Supported values are: 'system', 'assistant', 'user', "
            "'function', 'tool', and 'developer'.",
        ),
        (
            7,
            "empty_array",
            "body.messages",
            "Invalid 'body.messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
        ),
    ]


@pytest.mark.parametrize(
    ("url", "body", "message"),
    [
        ("/v1/completions", {"model": "davinci-002"}, "Prompt parameter is required."),
        ("/v1/embeddings", {"model": "text-embedding-3-small"}, "Input parameter is required."),
    ],
)
async def test_each_endpoint_requires_its_own_input(
    client: openai.AsyncOpenAI, url: str, body: dict[str, Any], message: str
) -> None:
    done = await wait_until(
        client, (await submit(client, [request("a", url, body)], endpoint=url)).id, "failed"
    )
    assert done.errors is not None
    assert [(e.line, e.message) for e in done.errors.data or []] == [(1, message)]


# -- 6. a missing input file fails the batch in validation ------------------------------


async def test_a_batch_for_a_missing_file_is_created_then_fails_in_validation(
    client: openai.AsyncOpenAI,
) -> None:
    batch = await client.batches.create(
        input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "validating"
    done = await wait_until(client, batch.id, "failed")
    assert done.errors is not None
    assert [(e.code, e.param, e.line, e.message) for e in done.errors.data or []] == [
        (
            "invalid_request",
            "file_id",
            None,
            "Cannot find file file-nope, or organization org-emulator does not have access to it.",
        )
    ]


# -- 7. OpenAI's error wording and fields ------------------------------------------------


async def test_metadata_of_the_wrong_type_is_named_by_its_path(
    client: openai.AsyncOpenAI,
) -> None:
    refused = await refused_batch(client, metadata={"tags": ["a", "b"]})
    assert (refused.code, refused.param, said(refused)) == (
        "invalid_type",
        "metadata.tags",
        "Invalid type for 'metadata.tags': expected a string, but got an array instead.",
    )


async def test_an_unsupported_endpoint_lists_the_supported_values(
    client: openai.AsyncOpenAI,
) -> None:
    refused = await refused_batch(client, endpoint="/v1/nope")
    assert (refused.code, refused.param) == ("invalid_value", "endpoint")
    assert said(refused) == f"Invalid value: '/v1/nope'. {SUPPORTED}"


async def test_an_unknown_model_is_not_supported_by_the_batch_api_on_every_line(
    client: openai.AsyncOpenAI,
) -> None:
    lines = [line("a", model="gpt-imaginary"), line("b", model="gpt-imaginary")]
    message = "The provided model 'gpt-imaginary' is not supported by the Batch API."
    assert await errors_of(client, lines) == [
        (1, "model_not_found", "body.model", message),
        (2, "model_not_found", "body.model", message),
    ]


async def test_an_unparsable_body_gets_openais_parse_error(emulator: Running) -> None:
    async with (
        aiohttp.ClientSession(headers={"Authorization": "Bearer sk"}) as s,
        s.post(f"{emulator.url}/v1/batches", data=b"{nope") as r,
    ):
        assert r.status == 400
        error = (await r.json())["error"]
        assert error["message"].startswith("We could not parse the JSON body of your request.")
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            None,
            None,
        )


async def test_an_unknown_parameter_is_unrecognized(client: openai.AsyncOpenAI) -> None:
    refused = await refused_batch(client, extra_body={"priority": "high"})
    assert said(refused) == "Unrecognized request argument supplied: priority"


# -- 8. expiry, and the endpoints the emulator does not serve ------------------------------


async def test_a_file_uploaded_with_expires_after_reports_when_it_expires(
    client: openai.AsyncOpenAI,
) -> None:
    f = await client.files.create(
        file=("in.jsonl", jsonl([line("a")])),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert f.expires_at == f.created_at + 3600
    assert (await client.files.retrieve(f.id)).expires_at == f.created_at + 3600
    default = await client.files.create(file=("in.jsonl", jsonl([line("a")])), purpose="batch")
    assert default.expires_at == default.created_at + 30 * 24 * 3600  # batch files: 30 days


async def test_an_expiry_out_of_range_is_refused_as_openai_refuses_it(
    client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.files.create(
            file=("in.jsonl", jsonl([line("a")])),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert (info.value.code, info.value.param) == (
        "integer_below_min_value",
        "expires_after.seconds",
    )


async def test_output_and_error_files_carry_output_expires_after(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(line_failure_rate=0.5, seed=3)
    batch = await submit(
        client,
        [line(f"r{i}") for i in range(20)],
        output_expires_after={"anchor": "created_at", "seconds": 7200},
    )
    done = await wait_until(client, batch.id, "completed")
    assert done.output_file_id
    assert done.error_file_id
    for file_id in (done.output_file_id, done.error_file_id):
        f = await client.files.retrieve(file_id)
        assert f.expires_at == f.created_at + 7200


async def test_an_expired_file_is_gone(client: openai.AsyncOpenAI, emulator: Running) -> None:
    f = await client.files.create(
        file=("in.jsonl", jsonl([line("a")])),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    emulator.state.clock = lambda: time.time() + 3601
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(f.id)
    batch = await client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = await wait_until(client, batch.id, "failed")
    assert done.errors is not None
    assert [e.param for e in done.errors.data or []] == ["file_id"]


@pytest.mark.parametrize(
    "endpoint",
    ["/v1/moderations", "/v1/images/generations", "/v1/images/edits", "/v1/videos"],
)
async def test_endpoints_the_emulator_does_not_serve_are_refused_as_unsupported(
    client: openai.AsyncOpenAI, endpoint: Any
) -> None:
    refused = await refused_batch(client, endpoint=endpoint)
    assert (refused.code, refused.param) == ("invalid_value", "endpoint")
    assert said(refused) == f"Invalid value: '{endpoint}'. {SUPPORTED}"
