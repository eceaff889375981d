"""The requests pages in a real Chromium, on data made by the real pipeline: filters,
search, paging, CSV export, the audit timeline and state as of an event, requeue,
company scopes and live updates."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from typing import Any

import pytest

from service.entrypoints.console import pages_requests
from service.entrypoints.console.pages_requests import csv_cell
from tests.console.browser_api import expect
from tests.console.conftest import SCOPED_COMPANY, Console, Tab, TabFactory, path_of
from tests.console.seeding import catch_up_after, failed, queue, settle

API = "/api/admin/legacy"


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
        await expect(cells.nth(8)).to_have_text(entry["correlationId"] or "—")
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


async def test_batch_and_openai_ids_link_to_the_consoles_batch_page(tab: Tab) -> None:
    console, page = tab.console, tab.page
    (rid,) = await queue(console, 1, prefix="link-")
    await settle(console)
    batch = await console.runtime.store.pool.fetchrow(
        "SELECT batch_id, openai_batch_id FROM batches"
    )
    bid, openai_bid = batch["batch_id"], batch["openai_batch_id"]
    assert openai_bid
    batch_url = f"/admin/batches/{bid}"
    await tab.sign_in(console.tokens["support"])
    await page.goto("/admin/requests")
    listed = page.locator("table.requests tbody tr").first.get_by_role("link", name=bid)
    await expect(listed).to_have_attribute("href", batch_url)
    await page.goto(f"/admin/requests/{rid}")
    now = page.locator("dl.facts").first
    await expect(now.get_by_role("link", name=bid)).to_have_attribute("href", batch_url)
    await expect(now.get_by_role("link", name=openai_bid)).to_have_attribute("href", batch_url)
    completed = page.locator("table.timeline tbody tr").filter(has_text="RequestCompleted")
    cells = completed.locator("td")
    await expect(cells.nth(5).get_by_role("link")).to_have_attribute("href", batch_url)
    await expect(cells.nth(6).get_by_role("link", name=openai_bid)).to_have_attribute(
        "href", batch_url
    )
    openai_request = cells.nth(7).get_by_role("link")
    await expect(openai_request).to_have_text(re.compile(r"\S+"))
    await expect(openai_request).to_have_attribute("href", batch_url)
    async with page.expect_navigation():
        await cells.nth(6).get_by_role("link").click()
    assert path_of(page.url) == batch_url
    assert tab.problems == []


async def test_a_live_change_shows_on_the_first_refresh_though_the_projection_lags(
    tab: Tab,
) -> None:
    """The live channel announces an event once the projections have applied it, so the
    fragment fetched on hearing of it already holds it (no second refresh needed)."""
    console, page = tab.console, tab.page
    await queue(console, 1, prefix="old-")
    await tab.sign_in(console.tokens["support"])
    await page.goto("/admin/requests")
    await expect(page.locator("#live-status")).to_have_text("Live")
    async with page.expect_response(lambda r: "fragment=table" in r.url) as first:
        await queue(console, 1, prefix="new-", project=False)
        await catch_up_after(console, 0.5)  # a runner half a second behind
    assert "new-0" in await (await first.value).text()
    assert await table_ids(tab) == ["new-0", "old-0"]
    assert tab.problems == []


async def test_requeue_all_stops_at_its_cap_says_more_remain_and_a_second_click_does_the_rest(
    tab: Tab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 pages of 2 a click, 5 failed requests: 4, then 1. The list after a click, and the
    next click, read the projection only once it has applied the requeues (before, the
    second click found the first click's requests again: "requeued=0 skipped=2")."""
    console, page = tab.console, tab.page
    monkeypatch.setattr(pages_requests, "REQUEUE_PAGE", 2)
    monkeypatch.setattr(pages_requests, "REQUEUE_PAGES", 2)
    ids = await failed(console, 5, prefix="cap-")
    await tab.sign_in(console.tokens["admin"])
    await page.goto("/admin/requests?status=processing_failed")
    assert await table_ids(tab) == list(reversed(ids))
    page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
    button = page.get_by_role("button", name="Requeue all failed requests of this filter")
    # Playwright's click returns once the answer's page has loaded: the runner (half a
    # second behind) applies the requeues meanwhile.
    await asyncio.gather(button.click(), catch_up_after(console, 0.5))
    notice = page.get_by_role("status").filter(has_text="Requeued")
    await expect(notice).to_have_text(
        "Requeued 4 requests; skipped 0 (not failed, or not visible to your token)."
        " More failed requests remain: requeue again."
    )
    assert await table_ids(tab) == [ids[0]], "the four requeued ones left the list"
    await asyncio.gather(button.click(), catch_up_after(console, 0.5))
    await expect(notice).to_have_text(
        "Requeued 1 request; skipped 0 (not failed, or not visible to your token)."
    )
    await expect(page.locator(".empty")).to_be_visible()
    rows = await console.runtime.store.pool.fetch("SELECT status FROM requests")
    assert {r["status"] for r in rows} == {"PENDING_BATCHING"}
    assert tab.problems == []


async def test_a_second_requeue_click_goes_on_below_the_first_though_the_projection_is_stopped(
    tab: Tab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "requeue again" form carries where the first click stopped: the second click
    requeues the rest even while the projection still lists the first click's requests
    as failed (before, it found those again and skipped them)."""
    console, page = tab.console, tab.page
    monkeypatch.setattr(pages_requests, "REQUEUE_PAGE", 2)
    monkeypatch.setattr(pages_requests, "REQUEUE_PAGES", 2)
    ids = await failed(console, 5, prefix="stop-")
    await tab.sign_in(console.tokens["admin"])
    await page.goto("/admin/requests?status=processing_failed")
    page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
    button = page.get_by_role("button", name="Requeue all failed requests of this filter")
    await button.click()  # nothing applies the requeues: the projection is stopped
    notice = page.get_by_role("status").filter(has_text="Requeued")
    await expect(notice).to_have_text(
        "Requeued 4 requests; skipped 0 (not failed, or not visible to your token)."
        " More failed requests remain: requeue again."
    )
    assert await table_ids(tab) == list(reversed(ids)), "the projection has not moved"
    await button.click()
    await expect(notice).to_have_text(
        "Requeued 1 request; skipped 0 (not failed, or not visible to your token)."
    )
    await console.runtime.catch_up()
    rows = await console.runtime.store.pool.fetch("SELECT status FROM requests")
    assert {r["status"] for r in rows} == {"PENDING_BATCHING"}
    # A cursor not made for this filter, this session and this quarter hour is refused,
    # not followed: a bookmarked "requeue again" must not skip newer failures later.
    cursors = console.deps.cursors
    session_hash = await console.runtime.store.pool.fetchval(
        "SELECT id_hash FROM console_sessions ORDER BY created_at DESC LIMIT 1"
    )
    scope = "console-requeue|processing_failed" + "|" * (len(pages_requests.FILTER_FIELDS) - 1)
    quarter = int(time.time() // pages_requests.REQUEUE_CURSOR_SECONDS)
    refused = {
        "made up": "not-a-cursor",
        "a list page's": cursors.encode(3, scope.replace("console-requeue", "console-requests")),
        "another filter's": cursors.encode(3, f"{scope}acme|{session_hash}|{quarter}"),
        "another session's": cursors.encode(3, f"{scope}|{'0' * 64}|{quarter}"),
        "lapsed": cursors.encode(3, f"{scope}|{session_hash}|{quarter - 2}"),
    }
    for why, cursor in refused.items():
        answer = await page.request.post(
            "/admin/requests/requeue",
            form={
                "csrf_token": await tab.csrf_token(),
                "status": "processing_failed",
                "cursor": cursor or "",
            },
            max_redirects=0,
        )
        assert answer.status == 400, why
    fresh = cursors.encode(3, f"{scope}|{session_hash}|{quarter}")
    answer = await page.request.post(
        "/admin/requests/requeue",
        form={"csrf_token": await tab.csrf_token(), "status": "processing_failed", "cursor": fresh},
        max_redirects=0,
    )
    assert answer.status == 303, "the scope above is the one a real click makes"
    assert tab.problems == []


async def _tab_to(tab: Tab, test: str, limit: int = 80) -> None:
    """Press Tab until the focused element passes the JavaScript test `test` (on `el`)."""
    for _ in range(limit):
        await tab.page.keyboard.press("Tab")
        if await tab.page.evaluate(f"(el => {test})(document.activeElement)"):
            return
    raise AssertionError(f"Tab never reached an element where {test}")


async def test_the_requests_pages_work_with_the_keyboard_alone(tab: Tab) -> None:
    console, page = tab.console, tab.page
    (rid,) = await failed(console, 1, prefix="kb-")
    await queue(console, 2, company="globex", prefix="other-")
    await tab.sign_in(console.tokens["admin"])
    await page.goto("/admin/requests")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focus is visible"
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "f-q", "main's first field"
    await _tab_to(tab, "el.id === 'f-company'")
    await page.keyboard.type("acme")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert "company=acme" in page.url
    assert await table_ids(tab) == [rid]
    await _tab_to(tab, f"el.textContent === '{rid}'")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert path_of(page.url) == f"/admin/requests/{rid}"
    asked: list[str] = []
    answers: list[asyncio.Future[None]] = []

    def confirm(dialog: Any) -> None:
        asked.append(dialog.message)
        answers.append(asyncio.ensure_future(dialog.accept()))

    page.on("dialog", confirm)
    await _tab_to(tab, "el.textContent === 'Requeue this request'")
    async with page.expect_navigation():
        await page.keyboard.press("Space")
    assert len(asked) == 1
    assert asked[0].startswith("Requeue this failed request?")
    await expect(page.get_by_role("status").filter(has_text="Requeued 1 request")).to_be_visible()
    assert tab.problems == []
