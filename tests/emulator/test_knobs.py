"""Knob ranges, refused as docs/emulator.md says, and the knobs the fault suite relies on."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import openai
import pytest
from aiohttp import web

from service.tools.emulator.app import create_emulator_app
from service.tools.emulator.knobs import Knobs, accepted
from tests.conftest import Running
from tests.emulator.helpers import line, submit, wait_until

ROOT = Path(__file__).resolve().parents[2]
REAL_STATUSES = {"validating", "in_progress", "finalizing", "completed"}


async def post(emulator: Running, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{emulator.url}{path}", data=body, headers={"Content-Type": "application/json"}
        ) as r,
    ):
        return r.status, await r.json()


async def knobs_now(emulator: Running) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{emulator.url}/_emulator/knobs") as r:
        body: dict[str, Any] = await r.json()
        return body


@pytest.mark.parametrize(
    ("name", "value", "range_words"),
    [
        ("line_failure_rate", 2, "a number from 0 to 1"),
        ("validating_seconds", -5, "a number from 0 to 86400"),
        ("max_lines", 0, "a whole number from 1 to 1000000"),
        ("max_file_bytes", 0, "a whole number from 1 to 209715200"),
        ("partial_lines", -1, "a whole number from 0 to 1000000"),
        ("retry_after_seconds", -1, "a whole number from 0 to 86400"),
        ("response_delay_seconds", 601, "a number from 0 to 600"),
        ("odd_status", "", "a string of 1 to 64 characters or null"),
        ("odd_status_retrieves", -1, "a whole number from 0 to 1000000"),
        ("enqueued_token_limit", -1, "a whole number >= 0 or null"),
        (
            "models",
            ["gpt-4o", ""],
            "a list of at most 1000 items, each a string of 1 to 200 characters",
        ),
    ],
)
async def test_a_knob_outside_its_range_is_a_400_naming_the_knob_and_its_range(
    emulator: Running, name: str, value: object, range_words: str
) -> None:
    before = await knobs_now(emulator)
    status, answer = await post(emulator, "/_emulator/knobs", msgspec.json.encode({name: value}))
    assert status == 400
    error = answer["error"]
    assert (error["param"], error["code"]) == (name, "invalid_value")
    assert f"{name} must be {range_words}" in error["message"]
    assert await knobs_now(emulator) == before


async def test_a_body_that_is_not_a_json_object_of_knobs_is_a_400_not_a_500(
    emulator: Running,
) -> None:
    for body in (b"[1, 2]", b"{", b'"line_failure_rate"'):
        for path in ("/_emulator/knobs", "/_emulator/reset"):
            status, answer = await post(emulator, path, body)
            assert status == 400, (path, body)
            assert set(answer["error"]) == {"message", "type", "param", "code"}


async def test_a_reset_with_an_invalid_knob_is_refused_and_forgets_nothing(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    batch = await submit(client, [line("a")])
    status, answer = await post(emulator, "/_emulator/reset", b'{"max_lines": 0}')
    assert (status, answer["error"]["param"]) == (400, "max_lines")
    assert (await client.batches.retrieve(batch.id)).id == batch.id


async def test_every_knob_is_in_the_docs_table_with_its_range() -> None:
    text = (ROOT / "docs" / "emulator.md").read_text(encoding="utf-8")
    rows = [row for row in text.splitlines() if row.startswith("| `")]
    for name in Knobs.__struct_fields__:
        row = next((r for r in rows if f"`{name}`" in r.split("|")[1]), None)
        assert row is not None, f"docs/emulator.md has no row for {name}"
        # The range as the error states it, in the table's own words: bounds as numbers.
        bounds = re.findall(r"from (-?[\d.]+) to ([\d.]+)", accepted(name))
        for low, high in bounds:
            assert low in row, (name, row)
            assert high in row or f"{int(high):,}" in row, (name, row)


async def test_response_delay_outlasts_a_client_timeout_yet_the_call_is_carried_out(
    emulator: Running,
) -> None:
    await emulator.knobs(response_delay_seconds=0.5)
    impatient = openai.AsyncOpenAI(
        base_url=f"{emulator.url}/v1",
        api_key="sk",
        max_retries=0,
        timeout=0.1,
        _strict_response_validation=True,
    )
    with pytest.raises(openai.APITimeoutError):
        await impatient.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
    await impatient.close()
    # The upload was carried out, only its answer was late: as OpenAI may, it kept the file.
    for _ in range(100):
        if emulator.state.files:
            break
        await asyncio.sleep(0.02)
    assert [f.filename for f in emulator.state.files.values()] == ["in.jsonl"]
    patient = openai.AsyncOpenAI(
        base_url=f"{emulator.url}/v1", api_key="sk", max_retries=0, _strict_response_validation=True
    )
    started = asyncio.get_running_loop().time()
    assert [f.filename async for f in patient.files.list()] == ["in.jsonl"]
    assert asyncio.get_running_loop().time() - started >= 0.5
    await patient.close()


async def test_odd_status_is_reported_by_the_first_retrievals_of_the_next_batch_only(
    client: openai.AsyncOpenAI, emulator: Running
) -> None:
    await emulator.knobs(odd_status="paused", odd_status_retrieves=3)
    odd = await submit(client, [line("a")])
    normal = await submit(client, [line("b")])
    assert (await knobs_now(emulator))["odd_status"] is None  # armed for one batch only
    # The SDK's Batch.status is a Literal: a strict client refuses the status outright.
    with pytest.raises(openai.APIResponseValidationError):
        await client.batches.retrieve(odd.id)
    # So this client reads without strict validation, as the service's gateway
    # (service/adapters/openai_gateway.py) does.
    lax = openai.AsyncOpenAI(base_url=f"{emulator.url}/v1", api_key="sk", max_retries=0)
    assert [(await lax.batches.retrieve(odd.id)).status for _ in range(2)] == ["paused"] * 2
    assert (await lax.batches.retrieve(odd.id)).status in REAL_STATUSES
    assert (await wait_until(client, odd.id, "completed")).status == "completed"
    assert (await lax.batches.retrieve(normal.id)).status in REAL_STATUSES
    await lax.close()


async def test_stopping_the_emulator_sends_answers_held_by_the_response_delay_at_once() -> None:
    app = create_emulator_app(Knobs(response_delay_seconds=600))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    held = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="sk", max_retries=0, timeout=30
    )

    async def list_batches() -> object:
        return await held.batches.list()

    call = asyncio.create_task(list_batches())
    try:
        await asyncio.sleep(0.3)  # the call is in, its answer held
        assert not call.done()
        started = asyncio.get_running_loop().time()
        await runner.cleanup()
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await runner.cleanup()
        with contextlib.suppress(openai.APIError):
            await call
        await held.close()
