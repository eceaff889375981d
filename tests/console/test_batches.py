"""The batches pages in a real Chromium: list, detail with timeline, cancel, 404s."""

from __future__ import annotations

import pytest

from service.adapters.tokens import Role, create_token
from service.entrypoints.console import pages_batches
from statemachine.states import BatchState
from tests.console.browser_api import expect
from tests.console.conftest import (
    SCOPED_COMPANY,
    Console,
    ConsoleFactory,
    Tab,
    TabFactory,
    path_of,
)
from tests.console.seeding import projecting
from tests.integration.test_pipeline_outcomes import queue, settle

OTHER = "globex"


async def batch_ids(console: Console, company: str | None = None) -> list[str]:
    """Batch ids, newest first (as the list shows them)."""
    rows = await console.runtime.store.pool.fetch(
        "SELECT batch_id FROM batches WHERE $1::text IS NULL OR company_id = $1 ORDER BY seq DESC",
        company,
    )
    return [r[0] for r in rows]


async def hold_at_openai(console: Console, n: int = 2, company: str = SCOPED_COMPANY) -> str:
    """A batch of `n` requests that OpenAI keeps in progress; its id."""
    rt = console.runtime
    await console.emulator.knobs(in_progress_seconds=600)
    await queue(rt, n, company=company, prefix=f"{company}-held-")
    await rt.catch_up()
    await rt.creator.run_once()
    await rt.catch_up()
    await rt.poller.run_once()
    await rt.catch_up()
    (bid,) = await rt.store.pool.fetchval(
        "SELECT array_agg(batch_id) FROM batches WHERE status = 'IN_PROGRESS'"
    )
    return str(bid)


async def test_the_batches_list_filters_by_status_and_company_and_pages_newest_first(
    tab: Tab, monkeypatch: pytest.MonkeyPatch
) -> None:
    page, console = tab.page, tab.console
    await tab.sign_in(console.tokens["support"])
    await page.goto("/admin/batches")
    await expect(page.get_by_text("There are no batches yet.")).to_be_visible()
    rt = console.runtime
    for i, company in enumerate([SCOPED_COMPANY, OTHER, SCOPED_COMPANY, OTHER]):
        await queue(rt, 1, company=company, prefix=f"p{i}-")
        await settle(rt)
    held = await hold_at_openai(console, 1, OTHER)
    monkeypatch.setattr(pages_batches, "PAGE_SIZE", 2)
    everything = await batch_ids(console)
    assert len(everything) == 5
    await page.goto("/admin/batches")
    rows = page.locator("table.batches tbody tr")
    await expect(rows.locator("td:first-child")).to_have_text(everything[:2])
    first = rows.first.locator("td")
    await expect(first.nth(1)).to_have_text(OTHER)
    await expect(first.nth(3)).to_have_text(BatchState.IN_PROGRESS.value)
    await expect(first.nth(4)).to_have_text("in_progress")
    async with page.expect_navigation():
        await page.get_by_role("link", name="Older batches").click()
    await expect(rows.locator("td:first-child")).to_have_text(everything[2:4])
    async with page.expect_navigation():
        await page.get_by_role("link", name="Older batches").click()
    await expect(rows.locator("td:first-child")).to_have_text(everything[4:])
    await expect(page.get_by_role("link", name="Older batches")).to_have_count(0)
    async with page.expect_navigation():
        await page.get_by_role("link", name="Newest batches").click()
    await expect(rows.locator("td:first-child")).to_have_text(everything[:2])
    # Filters: by the labelled controls, kept while paging.
    await page.get_by_label("Company").select_option(OTHER)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Filter").click()
    assert f"company={OTHER}" in path_of(page.url)
    await expect(rows.locator("td:first-child")).to_have_text((await batch_ids(console, OTHER))[:2])
    async with page.expect_navigation():
        await page.get_by_role("link", name="Older batches").click()
    await expect(rows.locator("td:first-child")).to_have_text((await batch_ids(console, OTHER))[2:])
    await page.goto(f"/admin/batches?status=processed&company={SCOPED_COMPANY}")
    await expect(page.get_by_label("Status")).to_have_value("processed")
    await expect(rows.locator("td:nth-child(4)")).to_have_text(["PROCESSED", "PROCESSED"])
    await expect(rows.locator("td:nth-child(2)")).to_have_text([SCOPED_COMPANY] * 2)
    await page.goto("/admin/batches?status=in_progress")
    await expect(rows.locator("td:first-child")).to_have_text([held])
    await page.goto("/admin/batches?status=cancelled")
    await expect(page.get_by_text("No batch matches these filters.")).to_be_visible()
    bad = await page.request.get("/admin/batches?status=nope")
    assert bad.status == 400
    assert "pick one from the Status list" in await bad.text()
    assert tab.problems == []


async def test_a_batch_page_shows_its_openai_ids_requests_and_the_apis_timeline(
    tab: Tab,
) -> None:
    page, console = tab.page, tab.console
    rt = console.runtime
    ids = await queue(rt, 3, company=SCOPED_COMPANY, prefix="d")
    await settle(rt)
    (bid,) = await batch_ids(console)
    await tab.sign_in(console.tokens["scoped"], f"/admin/signin?next=/admin/batches/{bid}")
    assert path_of(page.url) == f"/admin/batches/{bid}"
    await expect(page.get_by_role("heading", name=f"Batch {bid}")).to_be_visible()
    row = await rt.store.pool.fetchrow("SELECT * FROM batches WHERE batch_id = $1", bid)
    main = page.locator("main")
    for value in (row["openai_batch_id"], row["input_file_id"], row["output_file_id"]):
        await expect(main).to_contain_text(value)
    await expect(page.locator(".facts .batch-status")).to_have_text("PROCESSED")
    links = page.locator("table.batch-requests tbody a")
    await expect(links).to_have_text(ids)
    assert await links.first.get_attribute("href") == f"/admin/requests/{ids[0]}"
    # The timeline is the API's batch history: the same events, in order.
    r = await console.client.get(
        f"/api/admin/legacy/batches/{bid}/history",
        headers={"Authorization": f"Bearer {console.tokens['support']}"},
    )
    history = (await r.json())["history"]
    timeline = page.locator("table.timeline tbody tr")
    await expect(timeline).to_have_count(len(history))
    await expect(timeline.locator(".event-type")).to_have_text([h["type"] for h in history])
    await expect(timeline.locator("td:nth-child(4)")).to_have_text([h["actor"] for h in history])
    await expect(timeline.locator("td:nth-child(6)")).to_have_text(
        [str(h["position"]) for h in history]
    )
    times = await timeline.locator("time").evaluate_all(
        "els => els.map(e => e.getAttribute('datetime'))"
    )
    assert [t[:19] for t in times] == [h["occurredAt"][:19] for h in history]
    await expect(page.get_by_role("button", name="Cancel batch")).to_have_count(0)  # processed
    assert tab.problems == []


async def test_an_admin_cancels_a_running_batch_after_confirming(tab: Tab) -> None:
    page, console = tab.page, tab.console
    bid = await hold_at_openai(console)
    await tab.sign_in(console.tokens["admin"], f"/admin/signin?next=/admin/batches/{bid}")
    await expect(page.locator(".facts .batch-status")).to_have_text("IN_PROGRESS")
    questions: list[str] = []

    async def decline_then_accept(dialog: object) -> None:
        questions.append(dialog.message)  # type: ignore[attr-defined]
        if len(questions) == 1:
            await dialog.dismiss()  # type: ignore[attr-defined]
        else:
            await dialog.accept()  # type: ignore[attr-defined]

    page.on("dialog", decline_then_accept)
    cancel = page.get_by_role("button", name="Cancel batch")
    await cancel.click()  # declined: nothing is sent
    await expect(page.locator(".facts .batch-status")).to_have_text("IN_PROGRESS")
    async with projecting(console), page.expect_navigation():
        await cancel.click()
    assert questions[0].startswith(f"Cancel batch {bid} at OpenAI?")
    assert path_of(page.url) == f"/admin/batches/{bid}?cancel=sent"
    await expect(page.get_by_role("status").filter(has_text="Cancel sent")).to_be_visible()
    await expect(page.locator(".facts .batch-status")).to_have_text("CANCELLING")
    await expect(page.get_by_role("button", name="Cancel batch")).to_have_count(0)
    openai_id = await console.runtime.store.pool.fetchval(
        "SELECT openai_batch_id FROM batches WHERE batch_id = $1", bid
    )
    assert console.emulator.state.batches[openai_id].status in ("cancelling", "cancelled")
    timeline = page.locator("table.timeline tbody tr").last
    await expect(timeline.locator(".event-type")).to_have_text("BatchCancelRequested")
    await expect(timeline.locator("td:nth-child(4)")).to_have_text("token:admin-token")
    assert tab.problems == []


async def test_a_support_user_has_no_cancel_button_and_a_direct_post_is_refused(
    tab: Tab,
) -> None:
    page, console = tab.page, tab.console
    bid = await hold_at_openai(console)
    await tab.sign_in(console.tokens["support"], f"/admin/signin?next=/admin/batches/{bid}")
    await expect(page.locator(".facts .batch-status")).to_have_text("IN_PROGRESS")
    await expect(page.get_by_role("button", name="Cancel batch")).to_have_count(0)
    answer = await page.request.post(
        f"/admin/batches/{bid}/cancel", form={"csrf_token": await tab.csrf_token()}, max_redirects=0
    )
    assert answer.status == 403
    assert "This needs the admin role" in await answer.text()
    status = await console.runtime.store.pool.fetchval(
        "SELECT status FROM batches WHERE batch_id = $1", bid
    )
    assert status == "IN_PROGRESS"
    assert tab.problems == []


async def test_an_unknown_batch_and_another_companys_get_the_same_404_page(
    console: Console, tab_factory: TabFactory
) -> None:
    theirs = await hold_at_openai(console, 1, OTHER)
    scoped = await tab_factory(console)
    await scoped.sign_in(console.tokens["scoped"])
    page = scoped.page
    bodies = []
    for bid in (theirs, "no-such-batch", "bad id!"):
        answer = await page.goto(f"/admin/batches/{bid}")
        assert answer is not None
        assert answer.status == 404
        await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        bodies.append(await page.locator("main .lead").text_content())
    assert bodies[0] == bodies[1] == bodies[2]
    assert "There is no such batch" in (bodies[0] or "")
    # Cancelling another company's batch is the same 404, for an admin of acme too.
    token = await create_token(
        console.runtime.store.pool, "acme-admin", Role.admin, companies=[SCOPED_COMPANY]
    )
    admin = await tab_factory(console)
    await admin.sign_in(token)
    refused = await admin.page.request.post(
        f"/admin/batches/{theirs}/cancel",
        form={"csrf_token": await admin.csrf_token()},
        max_redirects=0,
    )
    assert refused.status == 404
    assert "There is no such batch" in await refused.text()
    still = "SELECT status FROM batches WHERE batch_id = $1"
    assert await console.runtime.store.pool.fetchval(still, theirs) == "IN_PROGRESS"
    await page.goto("/admin/batches")
    await expect(page.get_by_text("There are no batches yet.")).to_be_visible()
    # The browser reports each 404 page it loaded; nothing else.
    assert [p for p in scoped.problems if "status of 404" not in p] == []
    assert len(scoped.problems) == 3


async def test_without_openais_own_api_the_batch_page_has_no_dashboard_link(tab: Tab) -> None:
    """With the emulator (or any other endpoint) OpenAI's dashboard does not know the batch."""
    page, console = tab.page, tab.console
    bid = await hold_at_openai(console)
    openai_bid = await console.runtime.store.pool.fetchval(
        "SELECT openai_batch_id FROM batches WHERE batch_id = $1", bid
    )
    await tab.sign_in(console.tokens["support"])
    await page.goto(f"/admin/batches/{bid}")
    await expect(page.locator("dl").get_by_text(openai_bid)).to_be_visible()
    await expect(page.get_by_role("link", name="on OpenAI's dashboard")).to_have_count(0)
    assert "platform.openai.com" not in await page.content()
    assert tab.problems == []


async def test_a_batch_is_found_by_its_openai_batch_id_and_links_to_openais_dashboard(
    console_factory: ConsoleFactory, tab_factory: TabFactory
) -> None:
    console = await console_factory(openai_dashboard=True)  # as with OpenAI's own API
    tab = await tab_factory(console)
    page = tab.page
    bid = await hold_at_openai(console, company=OTHER)
    openai_bid = await console.runtime.store.pool.fetchval(
        "SELECT openai_batch_id FROM batches WHERE batch_id = $1", bid
    )
    await tab.sign_in(console.tokens["support"])
    await page.goto("/admin/batches")
    search = page.get_by_label("Find by batch id or OpenAI batch id")
    for text in (openai_bid, bid):
        await page.goto("/admin/batches")
        await search.fill(text)
        async with page.expect_navigation():
            await search.press("Enter")
        assert path_of(page.url) == f"/admin/batches/{bid}"
    dashboard = page.get_by_role("link", name="on OpenAI's dashboard")
    await expect(dashboard).to_have_attribute(
        "href", f"https://platform.openai.com/batches/{openai_bid}"
    )
    await expect(dashboard).to_have_attribute("rel", "external noopener noreferrer")
    await page.goto("/admin/batches?q=batch_unknown")
    await expect(page.get_by_role("alert")).to_contain_text(
        'No batch has the id or OpenAI batch id "batch_unknown" that'
    )
    await page.goto("/admin/batches?q=<b>it's</b>")  # not an id: said back as typed, as text
    await expect(page.get_by_role("alert")).to_contain_text(
        """No batch has the id or OpenAI batch id "<b>it's</b>" that"""
    )
    assert tab.problems == []
    # A token of another company finds nothing by either id: the same answer as unknown.
    scoped = await tab_factory(console)
    await scoped.sign_in(console.tokens["scoped"])
    await scoped.page.goto(f"/admin/batches?q={openai_bid}")
    assert path_of(scoped.page.url).startswith("/admin/batches?q=")
    await expect(scoped.page.get_by_role("alert")).to_contain_text("No batch has the id")
