"""Whatever a client sends, the emulator answers as OpenAI would: a 4xx or a success, never a
5xx, and every batch reaches an end. Random bodies go through the real SDK over HTTP to a
`batchledger emulator` process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openai.types import Batch

from tests.e2e.live import start_emulator, stop
from tests.unit.test_emulator_schemas import strict_schemas

ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything at all."""
    return st.one_of(valid, valid, json_values)


@pytest.fixture(scope="module")
def live() -> Iterator[openai.OpenAI]:
    proc, url = start_emulator()
    client = openai.OpenAI(
        base_url=f"{url}/v1", api_key="sk-test", max_retries=0, _strict_response_validation=True
    )
    try:
        yield client
    finally:
        client.close()
        stop(proc)


@pytest.fixture(scope="module")
def input_file(live: openai.OpenAI) -> str:
    line = {"custom_id": "a", "method": "POST", "url": ENDPOINTS[0], "body": {"model": "gpt-4o"}}
    return live.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch").id


def refused_as_openai_would(exc: openai.APIStatusError) -> None:
    assert 400 <= exc.status_code < 500, f"{exc.status_code}: {exc.response.text}"
    error = exc.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]


def batch_bodies(file_id: str) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with a few fields changed, dropped or added; or any object at all."""
    valid = {"input_file_id": file_id, "endpoint": ENDPOINTS[0], "completion_window": "24h"}
    variants = {
        "input_file_id": maybe(st.sampled_from([file_id, "", "file-nope"])),
        "endpoint": maybe(st.sampled_from([*ENDPOINTS, "", "/v1/moderations"])),
        "completion_window": maybe(st.sampled_from(["24h", "", "48h"])),
        "metadata": maybe(
            st.dictionaries(st.text(max_size=70), st.text(max_size=600), max_size=18)
        ),
        "output_expires_after": maybe(
            st.fixed_dictionaries(
                {"anchor": maybe(st.just("created_at")), "seconds": maybe(st.integers(0, 10**7))}
            )
        ),
        "stray": json_values,
    }

    @st.composite
    def varied(draw: st.DrawFn) -> dict[str, Any]:
        body: dict[str, Any] = dict(valid)
        for key in draw(st.lists(st.sampled_from(list(variants)), max_size=3, unique=True)):
            body[key] = draw(variants[key])
        for key in draw(st.lists(st.sampled_from(list(valid)), max_size=1)):
            body.pop(key)
        return body

    return varied() | st.dictionaries(st.text(max_size=25), json_values, max_size=5)


def test_random_batch_creations_get_a_4xx_or_a_batch(live: openai.OpenAI, input_file: str) -> None:
    @SETTINGS
    @given(body=batch_bodies(input_file))
    def check(body: dict[str, Any]) -> None:
        try:
            batch = live.post("/batches", body=body, cast_to=Batch)
        except openai.APIStatusError as exc:
            refused_as_openai_would(exc)
        else:
            assert batch.status == "validating"

    check()


def test_random_uploads_get_a_4xx_or_a_file(live: openai.OpenAI) -> None:
    @SETTINGS
    @given(
        name=st.sampled_from(["in.jsonl", "in.csv", "x"]),
        content=st.binary(max_size=200),
        purpose=maybe(st.sampled_from(["batch", "user_data", "fine-tune", "nope", ""])),
        expires=st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "anchor": st.sampled_from(["created_at", "now", ""]),
                "seconds": st.integers(-10, 10**7) | st.text(max_size=6),
            },
        ),
    )
    @example(name="in.jsonl", content=b"{}", purpose={"\x1b": False}, expires=None)
    @example(
        name="in.jsonl",
        content=b"{}",
        purpose="batch",
        expires={"anchor": "created_at", "seconds": "\u00b2"},
    )
    def check(name: str, content: bytes, purpose: Any, expires: Any) -> None:
        extra = {} if expires is None else {"expires_after": expires}
        try:
            f = live.files.create(file=(name, content), purpose=purpose, **extra)
        except openai.APIStatusError as exc:
            refused_as_openai_would(exc)
        else:
            assert f.bytes == len(content)

    check()


ODD_SCHEMAS = st.sampled_from(
    [
        {"type": "string", "pattern": "(?=a)(a+)+b", "minLength": 12},
        {"type": "number", "multipleOf": 1e-320},
        {"type": "integer", "multipleOf": 1e-7, "minimum": 0.5, "maximum": 0.9},
        {"type": "array", "minItems": 10**9},
        {"$ref": "#/$defs/nope"},
        {"$ref": "#"},
        False,
    ]
)


def schema_formats() -> st.SearchStrategy[dict[str, Any]]:
    """Structured Outputs formats: real strict schemas, odd ones, and junk."""
    schema = strict_schemas() | ODD_SCHEMAS.map(
        lambda odd: {"type": "object", "properties": {"v": odd}, "required": ["v"]}
    )
    spec = st.fixed_dictionaries(
        {"name": st.sampled_from(["x", "livedash_session_analysis"]), "schema": schema},
        optional={"strict": st.booleans()},
    )
    return st.fixed_dictionaries({"type": st.just("json_schema"), "json_schema": spec})


def lines_for(endpoint: str) -> st.SearchStrategy[list[Any]]:
    message = st.fixed_dictionaries(
        {},
        optional={
            "role": maybe(st.sampled_from(["user", "system", "assistant", "bot"])),
            "content": maybe(st.text(max_size=30)),
        },
    )
    body = st.fixed_dictionaries(
        {},
        optional={
            "model": maybe(st.sampled_from(["gpt-4o-mini", "text-embedding-3-small", "nope"])),
            "messages": maybe(st.lists(message, max_size=3)),
            "prompt": json_values,
            "input": json_values,
            "stream": st.booleans(),
            "n": json_values,
            "dimensions": json_values,
            "encoding_format": json_values,
            "response_format": maybe(
                schema_formats()
                | st.fixed_dictionaries(
                    {"type": st.sampled_from(["json_object", "json_schema", "text"])},
                    optional={"json_schema": json_values},
                )
            ),
            "text": json_values,
        },
    )
    envelope = st.fixed_dictionaries(
        {
            "custom_id": maybe(st.text(min_size=1, max_size=5)),
            "method": maybe(st.just("POST")),
            "url": maybe(st.just(endpoint)),
            "body": maybe(body),
        }
    )
    return st.lists(envelope | json_values, min_size=1, max_size=4)


def test_random_input_lines_end_every_batch_completed_or_failed(live: openai.OpenAI) -> None:
    @settings(SETTINGS, max_examples=80)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        endpoint = data.draw(st.sampled_from(ENDPOINTS))
        lines = data.draw(lines_for(endpoint))
        content = b"\n".join(json.dumps(x).encode() for x in lines)
        f = live.files.create(file=("in.jsonl", content), purpose="batch")
        batch = live.batches.create(
            input_file_id=f.id,
            endpoint=endpoint,  # type: ignore[arg-type]
            completion_window="24h",
        )
        deadline = time.monotonic() + 10
        while batch.status not in ("completed", "failed"):
            assert time.monotonic() < deadline, f"batch stuck {batch.status}"
            time.sleep(0.005)
            batch = live.batches.retrieve(batch.id)
        codes = [e.code for e in (batch.errors.data if batch.errors else [])]
        assert "server_error" not in codes, batch.errors
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id is not None:
                for raw in live.files.content(file_id).text.splitlines():
                    assert json.loads(raw)["response"]["status_code"] in (200, 400), raw

    check()
