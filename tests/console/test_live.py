"""The live channel: one shared wait for the projections, and a stream that drops and
resumes in a real Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from eventstore import EventStore
from service.entrypoints.api.app import create_app
from service.entrypoints.console.settle import (
    SETTLE_WITHIN,
    Projected,
    SettledSubscription,
    checkpoints_reader,
)
from service.tools.synthetic import ledger, queue_many
from tests.console.browser_api import expect
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
    # Generous above: a loaded machine may run the loop late, never early.
    assert 0.3 <= time.monotonic() - started < 2.5
    await asyncio.sleep(0.15)
    reads = projected.reads
    await asyncio.sleep(0.3)
    assert projected.reads == reads, "nobody waits any more: no more reads"
    await projected.close()


async def test_a_closed_waiter_starts_no_new_read_for_a_late_caller(pool: asyncpg.Pool) -> None:
    projected = Projected(checkpoints_reader(pool), poll=0.05)
    assert await projected.reach(5)
    await projected.close()
    reads = projected.reads
    assert await projected.reach(100, within=1.0) is False, "answers at once, unreached"
    await asyncio.sleep(0.2)
    assert projected.reads == reads
    assert projected._task is None or projected._task.done()


class Frozen:
    """Checkpoints that stay where a test puts them: a stopped projection."""

    def __init__(self) -> None:
        self.at = 0

    async def __call__(self) -> int:
        return self.at


async def _pages_within(
    sub: SettledSubscription, heartbeat: float, seconds: float
) -> tuple[list[int] | None, float]:
    """What `follow` does: wait for a page a heartbeat at a time, for up to `seconds`."""
    stop, started = asyncio.Event(), time.monotonic()
    while time.monotonic() - started < seconds:
        page = await sub.next_page_before(stop, heartbeat)
        if page is not None:
            return [e.position for e in page], time.monotonic() - started
    return None, time.monotonic() - started


async def test_heartbeats_shorter_than_the_wait_still_announce_a_page_the_projections_never_apply(
    store: EventStore,
) -> None:
    """Each heartbeat cancels the wait; the page's deadline holds across them (before, every
    retry got a fresh 2 s and a heartbeat under 2 s never let the page out)."""
    checkpoint = Frozen()
    projected = Projected(checkpoint, poll=0.05)
    sub = SettledSubscription(store, await store.head(), projected, scopes=None)
    await queue_many(ledger(store), 1)
    page, waited = await _pages_within(sub, heartbeat=0.4, seconds=SETTLE_WITHIN + 4)
    assert page == [await store.head()]
    assert SETTLE_WITHIN - 0.1 <= waited < SETTLE_WITHIN + 1.5
    await sub.close()
    await projected.close()


async def test_a_page_announced_before_it_was_projected_is_announced_again_once_it_is(
    store: EventStore,
) -> None:
    checkpoint = Frozen()
    projected = Projected(checkpoint, poll=0.05)
    sub = SettledSubscription(store, await store.head(), projected, scopes=None)
    await queue_many(ledger(store), 1)
    head = await store.head()
    assert (await _pages_within(sub, heartbeat=0.4, seconds=SETTLE_WITHIN + 4))[0] == [head]
    # Still stopped: heartbeats pass and nothing more is said.
    assert (await _pages_within(sub, heartbeat=0.4, seconds=1.0))[0] is None
    checkpoint.at = head  # the projections catch up
    page, waited = await _pages_within(sub, heartbeat=0.4, seconds=3.0)
    assert page == [head], "one more change for the page's fragments to refresh"
    assert waited < 1.0
    assert (await _pages_within(sub, heartbeat=0.4, seconds=1.0))[0] is None, "only once"
    # A page projected in time is announced once.
    await queue_many(ledger(store), 1, prefix="s")
    checkpoint.at = await store.head()
    assert (await _pages_within(sub, heartbeat=0.4, seconds=3.0))[0] == [checkpoint.at]
    assert (await _pages_within(sub, heartbeat=0.4, seconds=1.0))[0] is None
    await sub.close()
    await projected.close()


async def test_a_channel_cancelled_while_it_waits_leaves_no_wait_behind(
    store: EventStore,
) -> None:
    """The server stopping cancels its streams mid-wait: the late event's wait (which has
    no deadline) must end with them, or it reads checkpoints for ever."""
    checkpoint = Frozen()
    projected = Projected(checkpoint, poll=0.05)
    sub = SettledSubscription(store, await store.head(), projected, scopes=None)
    await queue_many(ledger(store), 1)
    assert (await _pages_within(sub, heartbeat=0.4, seconds=SETTLE_WITHIN + 4))[0] is not None
    waiting = asyncio.create_task(sub.next_page_before(asyncio.Event(), 30.0))
    await asyncio.sleep(0.3)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.2)
    reads = projected.reads
    await asyncio.sleep(0.3)
    assert projected.reads == reads, "nobody waits any more: no more reads"
    await sub.close()
    await projected.close()


async def test_the_header_says_reconnecting_while_the_stream_is_down_then_live_again(
    tab: Tab,
) -> None:
    """The server stops (its live streams end, as on a deploy) and starts again on the
    same port: the page says so, resumes by itself, shows what changed meanwhile, and
    follows changes again."""
    console, page = tab.console, tab.page
    await tab.sign_in(console.tokens["support"])
    await page.goto("/admin/requests")
    status = page.locator("#live-status")
    await expect(status).to_have_text("Live")
    port = console.client.server.port
    await console.client.server.close()
    await expect(status).to_have_text("Reconnecting…")
    await queue(console, 1, prefix="down-")  # while nothing could announce it
    again = TestServer(create_app(console.deps), host="127.0.0.1", port=port)
    await again.start_server()
    try:
        await expect(status).to_have_text("Live", timeout=15_000)
        rows = page.locator("table.requests tbody tr")
        await expect(rows.first).to_contain_text("down-0")  # refreshed on reconnecting
        await queue(console, 1, prefix="after-")
        row = page.locator("table.requests tbody tr").first
        await expect(row).to_contain_text("after-0")
    finally:
        await again.close()
    # What the browser said while the server was away (refused connections) is expected.
    assert [p for p in tab.problems if "ERR_CONNECTION_REFUSED" not in p] == []
