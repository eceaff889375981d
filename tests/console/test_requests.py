"""The requests pages in a real Chromium, on data made by the real pipeline: filters,
search, paging, CSV export, the audit timeline and state as of an event, requeue,
company scopes and live updates."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re

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

from service.application.ledger import Actor
from service.entrypoints.console.pages_requests import csv_cell
from statemachine.commands import QueueRequest
from tests.console.conftest import SCOPED_COMPANY, Console, Tab, TabFactory, path_of

TRANSCRIPT = "[01.10.2026 09:00:00] User: When is my next shift? Thanks!"
API = "/api/admin/legacy"


async def queue(
    console: Console, n: int, *, company: str = "acme", model: str = "gpt-4o-mini", prefix: str
) -> list[str]:
    """Queue n requests through the application, as the API's enqueue does."""
    commands = [
        QueueRequest(
            request_id=f"{prefix}{i}",
            company_id=company,
            session_id=f"s-{prefix}{i}",
            model=model,
            transcript=TRANSCRIPT,
        )
        for i in range(n)
    ]
    await console.runtime.app.queue(commands, Actor("token:test"))
    await console.runtime.catch_up()
    return [c.request_id for c in commands]


async def settle(console: Console) -> None:
    async with asyncio.timeout(30):
        await console.runtime.run_until_idle()
    await console.runtime.catch_up()


async def failed(
    console: Console, n: int, *, company: str = "acme", prefix: str, also: int = 0
) -> list[str]:
    """n requests that end PROCESSING_FAILED (every line fails, every attempt); `also`
    more of globex's (prefix "g" + prefix) fail with them."""
    await console.emulator.knobs(line_failure_rate=1.0)
    ids = await queue(console, n, company=company, prefix=prefix)
    if also:
        await queue(console, also, company="globex", prefix=f"g{prefix}")
    await settle(console)
    await console.emulator.knobs(line_failure_rate=0.0)
    return ids


async def table_ids(tab: Tab) -> list[str]:
    links = tab.page.locator("table.requests tbody tr td:first-child a")
    return [t.strip() for t in await links.all_text_contents()]


async def test_filters_search_and_the_next_page_link_cross_a_page_boundary(tab: Tab) -> None:
    console, page = tab.console, tab.page
    acme = await queue(console, 53, prefix="a-")
    await queue(console, 2, company="globex", model="gpt-4o", prefix="g-")
    await tab.sign_in(console.tokens["support"])
    await page.goto("/admin/requests")
    await expect(page.get_by_role("heading", name="Requests")).to_be_visible()
    await page.get_by_label("Company").fill("acme")
    await page.get_by_label("Status").select_option("pending_batching")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Apply filters").click()
    first = await table_ids(tab)
    assert first == list(reversed(acme))[:50], "newest first, one page of 50"
    async with page.expect_navigation():
        await page.get_by_role("link", name="Next page").click()
    assert "cursor=" in page.url
    assert "company=acme" in page.url
    assert await table_ids(tab) == list(reversed(acme))[50:]
    await expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    # Model, and dates as UTC days: today holds them all, tomorrow none.
    await page.goto("/admin/requests?model=gpt-4o")
    assert await table_ids(tab) == ["g-1", "g-0"]
    await page.goto("/admin/requests?from=2099-01-01")
    await expect(page.locator(".empty")).to_contain_text("No requests match this filter")
    # Search: an exact request id opens it; a session id lists its request.
    await page.get_by_label("Find by request id or session id").fill("a-7")
    async with page.expect_navigation():
        await page.get_by_label("Find by request id or session id").press("Enter")
    assert path_of(page.url) == "/admin/requests/a-7"
    await page.goto("/admin/requests?q=s-g-1")
    assert await table_ids(tab) == ["g-1"]
    assert tab.problems == []
    # Bad values re-render the form with what was wrong, as a 400 (which the browser logs).
    bad = await page.goto("/admin/requests?status=lost&from=yesterday")
    assert bad is not None
    assert bad.status == 400
    await expect(page.get_by_role("alert")).to_contain_text("Status must be one of")
    await expect(page.get_by_role("alert")).to_contain_text("Queued from must be a date")
    await expect(page.get_by_label("Status")).to_be_visible()
    tampered = await page.goto("/admin/requests?cursor=abc")
    assert tampered is not None
    assert tampered.status == 400


async def test_the_csv_export_holds_every_filtered_row_and_defuses_formulas(tab: Tab) -> None:
    console, page = tab.console, tab.page
    acme = await queue(console, 52, prefix="c-")
    await queue(console, 1, company="globex", prefix="=HYPERLINK-")
    await tab.sign_in(console.tokens["support"])
    await page.goto("/admin/requests?company=acme")
    href = await page.get_by_role("link", name="Export these requests as CSV").get_attribute("href")
    assert href == "/admin/requests.csv?company=acme"
    answer = await page.request.get(href)
    assert answer.status == 200
    assert answer.headers["content-disposition"].startswith('attachment; filename="requests-')
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await answer.text())))
    assert [r["request_id"] for r in rows] == list(reversed(acme)), "all rows, not one page"
    assert {r["company_id"] for r in rows} == {"acme"}
    assert rows[0]["status"] == "pending_batching"
    every = list(
        csv.DictReader(io.StringIO(await (await page.request.get("/admin/requests.csv")).text()))
    )
    assert every[0]["request_id"] == "'=HYPERLINK-0"
    assert every[0]["session_id"] == "s-=HYPERLINK-0"
    assert [csv_cell(v) for v in ("=1", "+1", "-1", "@x", "ok")] == [
        "'=1",
        "'+1",
        "'-1",
        "'@x",
        "ok",
    ]


async def test_the_timeline_equals_the_api_history_and_an_event_shows_the_state_as_of_it(
    tab: Tab,
) -> None:
    console, page = tab.console, tab.page
    (rid,) = await failed(console, 1, prefix="t-")
    await tab.sign_in(console.tokens["support"])
    await page.goto(f"/admin/requests/{rid}")
    await expect(page.locator("[data-status]")).to_have_text("processing_failed")
    api = await console.client.get(
        f"{API}/requests/{rid}/history",
        headers={"Authorization": f"Bearer {console.tokens['support']}"},
    )
    history = (await api.json())["history"]
    rows = page.locator("table.timeline tbody tr")
    await expect(rows).to_have_count(len(history))
    for i, entry in enumerate(history):
        cells = rows.nth(i).locator("td")
        await expect(cells.nth(0)).to_have_text(str(entry["version"]))
        await expect(cells.nth(1).locator("time")).to_have_attribute(
            "datetime", re.sub(r"\.\d+", "", entry["occurredAt"]).replace("+00:00", "Z")
        )
        await expect(cells.nth(2)).to_contain_text(entry["type"])
        await expect(cells.nth(3)).to_have_text(entry["actor"])
        await expect(cells.nth(7)).to_have_text(entry["correlationId"] or "—")
    types = [h["type"] for h in history]
    assert types[:3] == ["RequestQueued", "RequestBatched", "RequestFailed"]
    assert types[-1] == "RequestFailed"
    batch_link = rows.nth(1).locator("td").nth(5).get_by_role("link")
    assert (await batch_link.get_attribute("href") or "").startswith("/admin/batches/")
    await expect(rows.nth(2).locator("td").nth(4)).to_contain_text(":")  # code: message
    # Event 2 (batched): in progress, one attempt, in its batch.
    async with page.expect_navigation():
        await page.get_by_role("link", name="State as of event 2").click()
    assert path_of(page.url) == f"/admin/requests/{rid}?at=2"
    await expect(page.locator("[data-as-of-status]")).to_have_text("batching_in_progress")
    await expect(rows.nth(1)).to_have_attribute("aria-current", "true")
    await page.goto(f"/admin/requests/{rid}?at=1")
    await expect(page.locator("[data-as-of-status]")).to_have_text("pending_batching")
    assert tab.problems == []
    out_of_range = await page.goto(f"/admin/requests/{rid}?at=99")
    assert out_of_range is not None
    assert out_of_range.status == 400


async def test_an_admin_requeues_one_request_and_an_open_page_shows_it_live(
    tab: Tab, tab_factory: TabFactory
) -> None:
    console, page = tab.console, tab.page
    (rid,) = await failed(console, 1, prefix="one-")
    watcher = await tab_factory(console)  # a support user watching the same request
    await watcher.sign_in(console.tokens["support"])
    await watcher.page.goto(f"/admin/requests/{rid}")
    await expect(watcher.page.locator("#live-status")).to_have_text("Live")
    await expect(watcher.page.get_by_role("button", name="Requeue this request")).to_have_count(0)
    await tab.sign_in(console.tokens["admin"])
    await page.goto(f"/admin/requests/{rid}")
    page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
    async with page.expect_navigation():
        await page.get_by_role("button", name="Requeue this request").click()
    await expect(page.get_by_role("status").filter(has_text="Requeued 1 request")).to_be_visible()
    events = await console.runtime.store.read_stream(f"request-{rid}")
    assert events[-1].type == "RequestRequeued"
    assert events[-1].metadata.actor == "token:admin-token"
    # The watcher's page follows without a reload: a new timeline row and status.
    await console.runtime.catch_up()
    last = watcher.page.locator("table.timeline tbody tr").last
    await expect(last).to_contain_text("RequestRequeued")
    await expect(last).to_contain_text("token:admin-token")
    await expect(watcher.page.locator("[data-status]")).to_have_text("pending_batching")
    assert tab.problems == []
    assert watcher.problems == []


async def test_an_admin_requeues_every_failed_request_of_a_filter(tab: Tab) -> None:
    console, page = tab.console, tab.page
    acme = await failed(console, 3, prefix="fa-", also=2)
    globex = ["gfa-0", "gfa-1"]
    await tab.sign_in(console.tokens["admin"])
    await page.goto("/admin/requests?company=acme")
    await expect(page.get_by_role("button", name=re.compile("Requeue all"))).to_have_count(0)
    await page.goto("/admin/requests?status=processing_failed&company=acme")
    assert sorted(await table_ids(tab)) == sorted(acme)
    page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
    async with page.expect_navigation():
        await page.get_by_role("button", name="Requeue all failed requests of this filter").click()
    await expect(
        page.get_by_role("status").filter(has_text="Requeued 3 requests; skipped 0")
    ).to_be_visible()
    assert "company=acme" in page.url
    assert "status=processing_failed" in page.url
    await console.runtime.catch_up()
    rows = await console.runtime.store.pool.fetch("SELECT request_id, status FROM requests")
    status = {r["request_id"]: r["status"] for r in rows}
    assert {status[i] for i in acme} == {"PENDING_BATCHING"}
    assert {status[i] for i in globex} == {"PROCESSING_FAILED"}, "outside the filter"
    assert tab.problems == []


async def test_a_support_user_posting_a_requeue_with_a_valid_csrf_token_gets_403(tab: Tab) -> None:
    console, page = tab.console, tab.page
    (rid,) = await queue(console, 1, prefix="s-")  # the role is checked before anything
    await tab.sign_in(console.tokens["support"])
    await page.goto("/admin/requests?status=processing_failed")
    await expect(page.get_by_role("button", name=re.compile("Requeue"))).to_have_count(0)
    token = await tab.csrf_token()
    for path in (f"/admin/requests/{rid}/requeue", "/admin/requests/requeue"):
        answer = await page.request.post(
            path, form={"csrf_token": token, "status": "processing_failed"}, max_redirects=0
        )
        assert answer.status == 403
        assert "This needs the admin role" in await answer.text()
    events = await console.runtime.store.read_stream(f"request-{rid}")
    assert [e.type for e in events] == ["RequestQueued"], "nothing was written"


async def test_a_scoped_token_sees_only_its_companys_requests_and_404_for_others(
    tab: Tab,
) -> None:
    console, page = tab.console, tab.page
    await queue(console, 2, company=SCOPED_COMPANY, prefix="mine-")
    await queue(console, 2, company="globex", prefix="theirs-")
    await tab.sign_in(console.tokens["scoped"])
    await page.goto("/admin/requests")
    assert sorted(await table_ids(tab)) == ["mine-0", "mine-1"]
    await page.goto("/admin/requests?company=globex")
    await expect(page.locator(".empty")).to_be_visible()
    await page.goto("/admin/requests?q=theirs-0")
    assert path_of(page.url) == "/admin/requests?q=theirs-0", "not opened: not visible"
    await expect(page.locator(".empty")).to_be_visible()
    assert tab.problems == []
    other = await page.goto("/admin/requests/theirs-0")
    unknown_text = await page.locator(".lead").text_content()
    unknown = await page.goto("/admin/requests/no-such-request")
    assert other is not None
    assert unknown is not None
    assert other.status == unknown.status == 404
    assert unknown_text == await page.locator(".lead").text_content(), "the same answer"
    csv_text = await (await page.request.get("/admin/requests.csv")).text()
    assert "theirs-" not in csv_text
    assert "mine-0" in csv_text


async def test_the_requests_pages_work_390_px_wide(
    console: Console, tab_factory: TabFactory
) -> None:
    (rid,) = await queue(console, 1, prefix="n-")
    narrow = await tab_factory(console, viewport={"width": 390, "height": 844})
    await narrow.sign_in(console.tokens["admin"])
    for path in ("/admin/requests", f"/admin/requests/{rid}"):
        await narrow.page.goto(path)
        overflow = await narrow.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path}: the page scrolls sideways by {overflow}px"
    assert narrow.problems == []
