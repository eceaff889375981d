"""The admin console in a real Chromium: sign-in, sessions, CSRF, roles, CSP, live updates."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

from service.adapters.tokens import revoke_token
from service.entrypoints.console.guard import CSP, CSRF_REFUSED
from service.tools.synthetic import ledger, queue_many
from tests.console.browser_api import expect
from tests.console.conftest import (
    SCOPED_COMPANY,
    Console,
    ConsoleFactory,
    Tab,
    TabFactory,
    path_of,
)

PAGES = ["/admin/", "/admin/requests", "/admin/batches", "/admin/tokens", "/admin/projections"]


async def test_signs_in_and_out(tab: Tab) -> None:
    page = tab.page
    await tab.sign_in(tab.console.tokens["admin"])
    assert path_of(page.url) == "/admin/"
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    header = page.locator("header")
    await expect(header).to_contain_text("admin-token")
    await expect(header.locator(".role")).to_have_text("admin")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Sign out").click()
    assert path_of(page.url).startswith("/admin/signin")
    await expect(page.get_by_role("status").filter(has_text="Signed out.")).to_be_visible()
    await page.goto("/admin/")
    assert path_of(page.url).startswith("/admin/signin"), "the session is gone"
    assert tab.problems == []


async def test_a_wrong_token_is_refused_with_a_message(tab: Tab) -> None:
    page = tab.page
    await page.goto("/admin/signin")
    await page.get_by_label("API token").fill("bl_0123456789abcdef_" + "x" * 43)
    async with page.expect_response(lambda r: r.request.method == "POST") as answer:
        await page.get_by_role("button", name="Sign in").click()
    assert (await answer.value).status == 401
    await expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    # The revoked-or-expired case reads the same: nothing tells a guesser which it was.
    await page.get_by_label("API token").fill(tab.console.tokens["admin"] + "x")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    assert "bl_session" not in {c["name"] for c in await tab.context.cookies()}


async def test_failed_sign_ins_are_throttled_with_a_429_page(
    console_factory: ConsoleFactory, tab_factory: TabFactory
) -> None:
    tab = await tab_factory(await console_factory(auth_failures=2))
    page = tab.page
    await page.goto("/admin/signin")
    statuses = []
    for _ in range(3):
        await page.get_by_label("API token").fill("bl_0123456789abcdef_" + "y" * 43)
        async with page.expect_response(lambda r: r.request.method == "POST") as answer:
            await page.get_by_role("button", name="Sign in").click()
        statuses.append((await answer.value).status)
        await page.wait_for_load_state()
        if statuses[-1] == 429:
            break
        await page.goto("/admin/signin")
    assert statuses == [401, 401, 429]
    await expect(page.get_by_role("heading", name="Too many attempts")).to_be_visible()
    await expect(page.locator("main")).to_contain_text("Too many failed sign-ins")
    # A valid token is never refused for its address's failures.
    await tab.sign_in(tab.console.tokens["support"])
    assert path_of(page.url) == "/admin/"


async def test_a_page_without_a_session_redirects_to_sign_in_and_back_to_next(tab: Tab) -> None:
    page = tab.page
    await page.goto("/admin/batches")
    assert path_of(page.url) == "/admin/signin?next=/admin/batches"
    await page.get_by_label("API token").fill(tab.console.tokens["support"])
    async with page.expect_navigation():
        await page.get_by_role("button", name="Sign in").click()
    assert path_of(page.url) == "/admin/batches"
    await expect(page.get_by_role("heading", name="Batches")).to_be_visible()
    await expect(page.get_by_role("link", name="Batches")).to_have_attribute("aria-current", "page")


async def test_next_never_leads_off_the_console(tab: Tab) -> None:
    await tab.sign_in(tab.console.tokens["support"], "/admin/signin?next=//evil.example/admin/")
    assert path_of(tab.page.url) == "/admin/"
    assert tab.page.url.startswith(tab.console.url)


async def test_the_session_cookie_is_http_only_and_same_site_strict(tab: Tab) -> None:
    await tab.sign_in(tab.console.tokens["support"])
    cookies = {c["name"]: c for c in await tab.context.cookies()}
    session = cookies["bl_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/admin/"
    assert session["secure"] is False  # CONSOLE_SECURE_COOKIES is off in the fixture
    assert session["expires"] == -1, "a browser-session cookie; the server ends it sooner"
    assert "bl_session" not in await tab.page.evaluate("document.cookie")
    assert "bl_signin" not in cookies, "the sign-in form's CSRF cookie is dropped"
    # Only a hash of the session id is stored.
    stored = await tab.console.runtime.store.pool.fetchval("SELECT id_hash FROM console_sessions")
    assert stored != session["value"]
    assert len(stored) == 64


async def test_a_form_posted_without_its_csrf_token_is_refused(tab: Tab) -> None:
    page = tab.page
    await tab.sign_in(tab.console.tokens["admin"])
    answer = await page.request.post("/admin/signout", form={"other": "x"}, max_redirects=0)
    assert answer.status == 403
    assert CSRF_REFUSED in await answer.text()
    wrong = await page.request.post("/admin/signout", form={"csrf_token": "nope"})
    assert wrong.status == 403
    # The right token, but sent from another site: refused too.
    token = await tab.csrf_token()
    foreign = await page.request.post(
        "/admin/signout",
        form={"csrf_token": token},
        headers={"Origin": "https://evil.example"},
        max_redirects=0,
    )
    assert foreign.status == 403
    await page.goto("/admin/")
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()  # still in
    # The sign-in form is protected as well (login CSRF): no cookie, no sign-in.
    await tab.context.clear_cookies()
    login = await page.request.post(
        "/admin/signin", form={"token": tab.console.tokens["admin"], "csrf_token": "forged"}
    )
    assert login.status == 403


async def test_a_support_user_posting_an_admin_action_gets_403(
    tab: Tab, tab_factory: TabFactory
) -> None:
    page = tab.page
    await tab.sign_in(tab.console.tokens["support"])
    await expect(page.get_by_role("link", name="Tokens")).to_have_count(0)
    token = await tab.csrf_token()
    answer = await page.request.post(
        "/admin/requests/requeue", form={"csrf_token": token}, max_redirects=0
    )
    assert answer.status == 403
    assert "This needs the admin role" in await answer.text()
    refused = await page.goto("/admin/tokens")
    assert refused is not None
    assert refused.status == 403
    await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    # An admin passes the same check: nothing has failed, so nothing is requeued.
    admin = await tab_factory(tab.console)
    await admin.sign_in(tab.console.tokens["admin"])
    allowed = await admin.page.request.post(
        "/admin/requests/requeue", form={"csrf_token": await admin.csrf_token()}, max_redirects=0
    )
    assert allowed.status == 303
    assert allowed.headers["location"] == (
        "/admin/requests?status=processing_failed&requeued=0&skipped=0"
    )


async def test_a_revoked_tokens_session_ends(tab: Tab) -> None:
    page = tab.page
    await tab.sign_in(tab.console.tokens["admin"])
    status = page.locator("#live-status")
    await expect(status).to_have_text("Live")
    await revoke_token(tab.console.runtime.store.pool, "admin-token")
    await expect(status).to_have_text("Live updates paused")  # the live channel ended
    await page.goto("/admin/requests")
    assert path_of(page.url) == "/admin/signin?next=/admin/requests"


async def test_an_idle_session_expires(
    console_factory: ConsoleFactory, tab_factory: TabFactory
) -> None:
    tab = await tab_factory(await console_factory(idle=timedelta(seconds=1)))
    page = tab.page
    await tab.sign_in(tab.console.tokens["support"])
    assert path_of(page.url) == "/admin/"
    await asyncio.sleep(1.5)  # the live channel runs meanwhile: it does not count as use
    await page.goto("/admin/requests")
    assert path_of(page.url) == "/admin/signin?next=/admin/requests"
    cookies = {c["name"] for c in await tab.context.cookies()}
    assert "bl_session" not in cookies, "the dead session's cookie is cleared"


async def test_every_page_sends_the_csp_and_the_browser_reports_no_errors(tab: Tab) -> None:
    page = tab.page
    responses = [await page.goto("/admin/signin")]
    await tab.sign_in(tab.console.tokens["superadmin"])
    for path in PAGES:
        responses.append(await page.goto(path))
        await expect(page.locator("h1")).to_be_visible()
        if path == "/admin/":
            await expect(page.locator("#live-status")).to_have_text("Live")
    for response in responses:
        assert response is not None
        assert response.status == 200, response.url
        headers = await response.all_headers()
        assert headers["content-security-policy"] == CSP
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["cache-control"] == "no-store"
    css = page.locator("link[rel=stylesheet][href*='console.css']")
    asset = await page.request.get(await css.get_attribute("href") or "")
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    nav = page.get_by_role("navigation", name="Main").get_by_role("link")
    await expect(nav).to_have_text(["Overview", "Requests", "Batches", "Tokens", "Projections"])
    assert tab.problems == []


async def test_the_console_works_390_px_wide(console: Console, tab_factory: TabFactory) -> None:
    narrow = await tab_factory(console, viewport={"width": 390, "height": 844})
    page = narrow.page
    await narrow.sign_in(console.tokens["superadmin"])
    for name in ["Requests", "Batches", "Tokens", "Projections", "Overview"]:
        link = page.get_by_role("navigation", name="Main").get_by_role("link", name=name)
        await expect(link).to_be_in_viewport()
        async with page.expect_navigation():
            await link.click()
        await expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
    await expect(page.get_by_role("button", name="Sign out")).to_be_in_viewport()
    assert narrow.problems == []


async def test_times_show_in_the_viewers_zone_with_utc_in_the_title(
    console: Console, tab_factory: TabFactory
) -> None:
    berlin = await tab_factory(console, timezone_id="Europe/Berlin", locale="en-GB")
    await berlin.sign_in(console.tokens["support"])
    time = berlin.page.locator("[data-fragment=activity] time")
    await expect(time).to_have_attribute("title", re.compile(r" UTC$"))
    shown, iso = await time.text_content(), await time.get_attribute("datetime")
    assert iso is not None
    assert iso.endswith("Z")
    assert shown is not None
    assert "UTC" not in shown, "formatted in the viewer's zone"


async def test_live_changes_reach_the_page_for_the_sessions_companies_only(tab: Tab) -> None:
    page = tab.page
    await tab.sign_in(tab.console.tokens["scoped"])
    await expect(page.locator("#live-status")).to_have_text("Live")
    await page.evaluate(
        "window.seen = [];"
        " document.addEventListener('console:change', e => window.seen.push(e.detail))"
    )
    agg = ledger(tab.console.runtime.store)
    await queue_many(agg, 2, company="other", prefix="o")
    await queue_many(agg, 1, company=SCOPED_COMPANY, prefix="a")
    await tab.console.runtime.catch_up()  # changes are announced once projected
    # (wait_for_function evaluates its predicate with eval(), which the CSP refuses.)
    async with asyncio.timeout(5):
        while not await page.evaluate("window.seen.length"):
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # anything else that was coming
    seen = await page.evaluate("window.seen")
    assert seen == [
        {"position": 3, "type": "RequestQueued", "stream": "request-a0", "company": "acme"}
    ]
    # The page's fragment followed the change (its log position is the session's head).
    await expect(page.locator("[data-fragment=activity] .position")).to_have_text("3")
    assert tab.problems == []
