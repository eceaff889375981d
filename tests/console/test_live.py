"""The live channel: one shared wait for the projections, and a stream that drops and
resumes in a real Chromium."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

try:
    from playwright.async_api import expect
except ImportError:  # CI must run these: there the import error fails the run
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(
        "Playwright is not installed: run `.venv/bin/pip install -e '.[dev]'`",
        allow_module_level=True,
    )
from aiohttp.test_utils import TestServer

from service.entrypoints.api.app import create_app
from service.entrypoints.console.settle import Projected, checkpoints_reader
from tests.console.conftest import Tab
from tests.console.seeding import queue


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    await p.execute(
        "INSERT INTO projection_checkpoints (name, position) VALUES ('requests', 5), ('batches', 5)"
    )
    yield p
    await p.close()


async def test_many_channels_waiting_share_one_checkpoint_read_per_poll(
    pool: asyncpg.Pool,
) -> None:
    projected = Projected(checkpoints_reader(pool), poll=0.05)
    waiting = [asyncio.create_task(projected.reach(9, within=2.0)) for _ in range(50)]
    await asyncio.sleep(0.3)
    assert not any(w.done() for w in waiting), "checkpoints at 5: still waiting for 9"
    await pool.execute("UPDATE projection_checkpoints SET position = 9 WHERE name = 'batches'")
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in waiting), "every projection must reach it"
    await pool.execute("UPDATE projection_checkpoints SET position = 12 WHERE name = 'requests'")
    assert await asyncio.gather(*waiting) == [True] * 50
    # About 0.5 s of polls every 0.05 s, whatever the number of channels.
    assert projected.reads <= 15
    reads = projected.reads
    assert await projected.reach(8), "already reached: no read"
    assert projected.reads == reads
    await projected.close()


async def test_a_wait_for_a_projection_that_does_not_move_ends_in_time(
    pool: asyncpg.Pool,
) -> None:
    projected = Projected(checkpoints_reader(pool), poll=0.05)
    started = time.monotonic()
    assert await projected.reach(100, within=0.3) is False
    assert 0.3 <= time.monotonic() - started < 1.0
    await asyncio.sleep(0.15)
    reads = projected.reads
    await asyncio.sleep(0.3)
    assert projected.reads == reads, "nobody waits any more: no more reads"
    await projected.close()


async def test_the_header_says_reconnecting_while_the_stream_is_down_then_live_again(
    tab: Tab,
) -> None:
    """The server stops (its live streams end, as on a deploy) and starts again on the
    same port: the page says so, resumes by itself, and follows changes again."""
    console, page = tab.console, tab.page
    await tab.sign_in(console.tokens["support"])
    await page.goto("/admin/requests")
    status = page.locator("#live-status")
    await expect(status).to_have_text("Live")
    port = console.client.server.port
    await console.client.server.close()
    await expect(status).to_have_text("Reconnecting…")
    again = TestServer(create_app(console.deps), host="127.0.0.1", port=port)
    await again.start_server()
    try:
        await expect(status).to_have_text("Live", timeout=15_000)
        await queue(console, 1, prefix="after-")
        row = page.locator("table.requests tbody tr").first
        await expect(row).to_contain_text("after-0")
    finally:
        await again.close()
    # What the browser said while the server was away (refused connections) is expected.
    assert [p for p in tab.problems if "ERR_CONNECTION_REFUSED" not in p] == []
