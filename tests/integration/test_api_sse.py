"""Server-Sent Events: resumable with Last-Event-ID, every event exactly once, heartbeats."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from service.tools.synthetic import ledger, queue_many, run_batch
from tests.integration.api_fixtures import Api

STREAM = "/api/admin/legacy/events/stream"


async def read_events(response: aiohttp.ClientResponse, n: int) -> list[tuple[int, str, dict]]:  # type: ignore[type-arg]
    """Read frames until n events arrived (comments are skipped)."""
    out: list[tuple[int, str, dict]] = []  # type: ignore[type-arg]
    frame: dict[str, str] = {}
    async with asyncio.timeout(10):
        while len(out) < n:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line == "":
                if frame:
                    out.append((int(frame["id"]), frame["event"], json.loads(frame["data"])))
                frame = {}
                continue
            key, _, value = line.partition(": ")
            frame[key] = value
    return out


async def test_reconnecting_with_last_event_id_delivers_every_event_exactly_once(api: Api) -> None:
    agg = ledger(api.runtime.store)
    await queue_many(agg, 3, prefix="a")
    seen: list[int] = []
    async with api.client.get(STREAM, headers=api.auth("support")) as first:
        assert first.status == 200
        assert first.headers["Content-Type"].startswith("text/event-stream")
        got = await read_events(first, 3)
        seen += [position for position, _, _ in got]
        assert [kind for _, kind, _ in got] == ["RequestQueued"] * 3
        assert got[0][2]["streamId"] == "request-a0"
    await queue_many(agg, 4, prefix="gap")  # appended while the client is away
    async with api.client.get(
        STREAM, headers={**api.auth("support"), "Last-Event-ID": str(seen[-1])}
    ) as second:
        live = asyncio.create_task(read_events(second, 6))
        await asyncio.sleep(0.2)
        await queue_many(agg, 2, prefix="live")  # appended while connected
        seen += [position for position, _, _ in await live]
    assert seen == list(range(1, 10)), "each event once, in order, none missing"


async def test_stream_filters_and_sends_heartbeats(api_factory) -> None:  # type: ignore[no-untyped-def]
    api: Api = await api_factory(heartbeat=0.1)
    async with api.client.get(
        STREAM, params={"category": "batch"}, headers=api.auth("support")
    ) as r:
        await queue_many(ledger(api.runtime.store), 2)  # request events: filtered out
        async with asyncio.timeout(5):
            lines = [(await r.content.readline()).decode() for _ in range(8)]
        assert lines.count(": keepalive\n") >= 3
        assert not any(line.startswith(("id:", "event:", "data:")) for line in lines)
        await run_batch(ledger(api.runtime.store), "b9", ["r0", "r1"])
        (first, *_) = await read_events(r, 1)
        assert first[2]["streamId"] == "batch-b9"


async def test_bad_last_event_id_is_a_400(api: Api) -> None:
    r = await api.client.get(STREAM, headers={**api.auth("support"), "Last-Event-ID": "abc"})
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "invalid_last_event_id"
