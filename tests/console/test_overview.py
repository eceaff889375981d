"""The overview page in a real Chromium, on data seeded through the real pipeline."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tests.console.browser_api import expect

if TYPE_CHECKING:
    from playwright.async_api import Locator

from projections import console_queries as cq
from service.entrypoints.console.pages import chart, usd
from statemachine.states import BatchState
from tests.console.conftest import SCOPED_COMPANY, Console, Tab
from tests.integration.test_pipeline_outcomes import queue, settle

OTHER = "globex"


async def in_flight(console: Console) -> None:
    """Run the creator and the poller once: waiting requests go to a batch at OpenAI."""
    rt = console.runtime
    await rt.catch_up()
    await rt.creator.run_once()
    await rt.catch_up()
    await rt.poller.run_once()
    await rt.catch_up()


async def seed(console: Console) -> None:
    """acme: 3 completed, 2 waiting; globex: 2 completed, 1 in a batch held at OpenAI."""
    rt = console.runtime
    await queue(rt, 3, company=SCOPED_COMPANY, prefix="a")
    await queue(rt, 2, company=OTHER, prefix="g")
    await settle(rt)
    await console.emulator.knobs(in_progress_seconds=600)
    await queue(rt, 1, company=OTHER, prefix="h")
    await in_flight(console)
    await queue(rt, 2, company=SCOPED_COMPANY, prefix="w")
    await rt.catch_up()


def totals(tab: Tab, status: str) -> Locator:
    return tab.page.locator(f".overview-total[data-status={status}] .overview-total-n")


async def test_overview_shows_requests_per_status_per_company_batches_in_flight_cost_and_chart(
    tab: Tab,
) -> None:
    await seed(tab.console)
    page = tab.page
    await tab.sign_in(tab.console.tokens["support"])
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expected = {
        "PENDING_BATCHING": "2",
        "BATCHING_IN_PROGRESS": "1",
        "PROCESSING_COMPLETE": "5",
        "PROCESSING_FAILED": "0",
    }
    for status, n in expected.items():
        await expect(totals(tab, status)).to_have_text(n)
    rows = page.locator(".overview-companies tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.locator("th")).to_have_text([SCOPED_COMPANY, OTHER])
    await expect(rows.nth(0).locator("td")).to_have_text(["2", "0", "3", "0"])
    await expect(rows.nth(1).locator("td")).to_have_text(["0", "1", "2", "0"])
    # The batch held at OpenAI, with its OpenAI status and a link to its page.
    flight = page.locator(".overview-in-flight tbody tr")
    await expect(flight).to_have_count(1)
    await expect(flight.locator("td").nth(1)).to_have_text(OTHER)
    await expect(flight.locator("td").nth(2)).to_have_text(BatchState.IN_PROGRESS.value)
    await expect(flight.locator("td").nth(3)).to_have_text("in_progress")
    link = flight.get_by_role("link")
    bid = await link.text_content()
    assert await link.get_attribute("href") == f"/admin/batches/{bid}"
    # Cost: what the completed requests cost, in USD, today, 7 and 30 days.
    cost = int(
        await tab.console.runtime.store.pool.fetchval(
            "SELECT sum(cost_micro_usd) FROM requests WHERE status = 'PROCESSING_COMPLETE'"
        )
    )
    assert cost > 0
    for key in ("today", "week", "month"):
        await expect(page.locator(f"[data-cost={key}]")).to_have_text(usd(cost))
    # The chart: an SVG with a title, 5 completed in the current hour, and its table.
    svg = page.get_by_role("img", name="Requests finished per hour over the last 24 hours (UTC)")
    await expect(svg).to_be_visible()
    await expect(svg.locator("rect.chart-completed")).to_have_count(1)
    await page.get_by_text("The chart's numbers as a table").click()
    hours = page.locator(".chart-data tbody tr")
    await expect(hours).to_have_count(24)
    await expect(hours.nth(23).locator("td")).to_have_text([re.compile(".+"), "5", "0"])
    # Projection lag: every projection caught up with the log.
    lag = page.locator(".overview-lag tbody tr")
    await expect(lag).to_have_count(2)
    await expect(lag.locator("td:nth-child(3)")).to_have_text(["0", "0"])
    assert tab.problems == []


async def test_a_scoped_token_sees_only_its_companys_numbers(tab: Tab) -> None:
    await seed(tab.console)
    page = tab.page
    await tab.sign_in(tab.console.tokens["scoped"])
    await expect(totals(tab, "PENDING_BATCHING")).to_have_text("2")
    await expect(totals(tab, "BATCHING_IN_PROGRESS")).to_have_text("0")
    await expect(totals(tab, "PROCESSING_COMPLETE")).to_have_text("3")
    await expect(page.locator(".overview-companies tbody tr")).to_have_count(1)
    await expect(page.locator("main")).not_to_contain_text(OTHER)
    await expect(page.locator(".overview-in-flight")).to_have_count(0)
    await expect(page.get_by_text("No batch is at OpenAI right now")).to_be_visible()
    acme_cost = int(
        await tab.console.runtime.store.pool.fetchval(
            "SELECT sum(cost_micro_usd) FROM requests WHERE company_id = $1", SCOPED_COMPANY
        )
    )
    await expect(page.locator("[data-cost=today]")).to_have_text(usd(acme_cost))
    await expect(page.locator(".chart-data tbody tr").nth(23).locator("td").nth(1)).to_have_text(
        "3"
    )
    await expect(page.locator(".overview-lag")).to_have_count(0)  # the log is everyone's
    assert tab.problems == []


async def test_the_overview_follows_new_requests_live_without_a_reload(tab: Tab) -> None:
    page = tab.page
    await tab.sign_in(tab.console.tokens["support"])
    await expect(page.get_by_text("No requests yet.")).to_be_visible()
    await expect(page.locator("#live-status")).to_have_text("Live")
    await page.evaluate("window.sameDocument = true")
    rt = tab.console.runtime
    await queue(rt, 4, company=SCOPED_COMPANY, prefix="live")
    await rt.catch_up()
    await expect(totals(tab, "PENDING_BATCHING")).to_have_text("4")
    await expect(page.locator(".overview-companies tbody tr")).to_have_count(1)
    await settle(rt)
    await expect(totals(tab, "PROCESSING_COMPLETE")).to_have_text("4")
    await expect(page.locator("[data-cost=today]")).not_to_have_text("$0.00")
    assert await page.evaluate("window.sameDocument") is True, "no reload happened"
    assert tab.problems == []


async def test_the_overview_queries_read_only_the_companies_asked(console: Console) -> None:
    await seed(console)
    pool, now = console.runtime.store.pool, datetime.now(UTC)
    scoped = frozenset({SCOPED_COMPANY})
    everyone = await cq.status_overview(pool, companies=None)
    mine = await cq.status_overview(pool, companies=scoped)
    assert [c.company_id for c in everyone.companies] == [SCOPED_COMPANY, OTHER]
    assert [c.company_id for c in mine.companies] == [SCOPED_COMPANY]
    assert mine.total.processing_complete == 3
    assert (await cq.batches_in_flight(pool, 10, companies=scoped)).total == 0
    assert (await cq.batches_in_flight(pool, 10, companies=None)).total == 1
    hours = await cq.finished_per_hour(pool, now, companies=scoped)
    assert len(hours) == 24
    assert sum(h.completed for h in hours) == 3
    assert (await cq.costs(pool, now, companies=frozenset({"nobody"}))).month == 0
    drawn = chart(hours)
    assert drawn.total_completed == 3
    assert all(b.completed_height >= 0 for b in drawn.bars)
