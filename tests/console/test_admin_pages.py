"""The superadmin pages in a real Chromium: tokens (create once-shown, revoke, errors, roles)
and projections (status, rebuild with progress); and `bench console --quick`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from projections import rebuild as rebuilding
from service.adapters.tokens import Role, create_token
from service.entrypoints.cli import main
from service.tools.bench.console_suites import PAGE_KEYS
from service.tools.bench.core import Result
from service.tools.synthetic import ledger, queue_many, run_batch
from tests.console.browser_api import Dialog, expect
from tests.console.conftest import Tab, TabFactory, path_of

SUMMARY = "/api/admin/legacy/summary"


def _accept_confirmations(tab: Tab) -> list[str]:
    """Accept every data-confirm question; the questions asked."""
    asked: list[str] = []

    async def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    tab.page.on("dialog", accept)
    return asked


async def _api_status(tab: Tab, token: str) -> int:
    async with tab.console.client.get(
        SUMMARY, headers={"Authorization": f"Bearer {token}"}
    ) as answer:
        return answer.status


async def _create(tab: Tab, **fields: str) -> int:
    """Fill the create form and send it; the answer's status."""
    page = tab.page
    await page.get_by_label("Name", exact=True).fill(fields.get("name", ""))
    await page.get_by_label("Role").select_option(fields.get("role", "support"))
    await page.get_by_label("Companies").fill(fields.get("companies", ""))
    await page.get_by_label("Expires in").fill(fields.get("expires", ""))
    async with page.expect_response(lambda r: r.request.method == "POST") as answer:
        await page.get_by_role("button", name="Create token").click()
    await page.wait_for_load_state()
    return (await answer.value).status


async def test_a_superadmin_creates_a_scoped_expiring_token_shown_once(tab: Tab) -> None:
    page = tab.page
    asked = _accept_confirmations(tab)
    await tab.sign_in(tab.console.tokens["superadmin"], "/admin/signin?next=/admin/tokens")
    await expect(page.get_by_role("heading", name="Tokens", exact=True)).to_be_visible()
    assert (
        await _create(tab, name="ci-sync", role="admin", companies="globex, acme", expires="30d")
        == 201
    )
    assert "Create this token?" in asked[0]
    assert path_of(page.url) == "/admin/tokens", "the token is never in a URL"
    field = page.get_by_label("API token for ci-sync (admin)")
    token = await field.input_value()
    assert re.fullmatch(r"bl_[0-9a-f]{16}_[A-Za-z0-9_\-]{20,100}", token)
    assert await field.get_attribute("readonly") is not None
    await expect(page.get_by_role("alert")).to_contain_text("it is not shown again")
    await expect(page.locator(".new-token")).to_contain_text("Limited to acme, globex")
    await expect(page.locator(".new-token")).to_contain_text("Expires")
    row = page.locator("tr", has=page.locator("th", has_text="ci-sync"))
    await expect(row).to_contain_text("acme, globex")
    await expect(row).to_contain_text("by token:superadmin-token")  # the API's actor string
    await expect(row).to_contain_text("active")
    await page.get_by_role("button", name="Copy").click()
    await expect(page.locator("#copy-status")).not_to_be_empty()
    # It works for the API, limited to its companies; and it is shown only that once.
    assert await _api_status(tab, token) == 200
    async with tab.console.client.get(
        f"{SUMMARY}?companyId=other", headers={"Authorization": f"Bearer {token}"}
    ) as outside:
        assert outside.status in (403, 404)
    await page.goto("/admin/tokens")
    assert token not in await page.content()
    assert tab.problems == []


async def test_revoking_a_token_ends_its_api_use_and_its_console_session(
    tab: Tab, tab_factory: TabFactory
) -> None:
    pool = tab.console.runtime.store.pool
    token = await create_token(pool, "leaving", Role.support, companies=["acme"])
    user = await tab_factory(tab.console)
    await user.sign_in(token)
    assert path_of(user.page.url) == "/admin/"
    page = tab.page
    asked = _accept_confirmations(tab)
    await tab.sign_in(tab.console.tokens["superadmin"], "/admin/signin?next=/admin/tokens")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Revoke leaving").click()
    assert "Revoke the token leaving?" in asked[0]
    assert path_of(page.url).startswith("/admin/tokens?revoked=leaving")
    await expect(page.get_by_role("status").filter(has_text="revoked")).to_be_visible()
    row = page.locator("tr", has=page.locator("th", has_text="leaving"))
    await expect(row).to_contain_text("revoked")
    await expect(row).to_contain_text("by token:superadmin-token")
    await expect(row.get_by_role("button", name="Revoke leaving")).to_have_count(0)
    assert await _api_status(tab, token) == 401
    await user.page.goto("/admin/")
    assert path_of(user.page.url).startswith("/admin/signin"), "its console session ended"
    # Revoking it again (a stale page) says so instead of failing.
    again = await page.request.post(
        "/admin/tokens/leaving/revoke", form={"csrf_token": await tab.csrf_token()}
    )
    assert again.status == 404
    assert "There is no active token named leaving" in await again.text()
    assert tab.problems == []
    assert user.problems == []


async def test_an_admin_may_not_see_or_use_the_superadmin_pages(tab: Tab) -> None:
    page = tab.page
    await tab.sign_in(tab.console.tokens["admin"])
    await expect(page.get_by_role("link", name="Tokens")).to_have_count(0)
    csrf = await tab.csrf_token()
    for path in ("/admin/tokens", "/admin/projections"):
        refused = await page.request.get(path)
        assert refused.status == 403, path
    for path, form in (
        ("/admin/tokens", {"name": "sneaky", "role": "superadmin"}),
        ("/admin/tokens/support-token/revoke", {}),
        ("/admin/projections/requests/rebuild", {}),
    ):
        answer = await page.request.post(path, form={"csrf_token": csrf, **form})
        assert answer.status == 403, path
        assert "This needs the superadmin role" in await answer.text()
    tokens = await tab.console.runtime.store.pool.fetch("SELECT name, revoked_at FROM api_tokens")
    assert "sneaky" not in {r["name"] for r in tokens}
    assert all(r["revoked_at"] is None for r in tokens)


async def test_bad_input_re_renders_the_form_with_the_message(tab: Tab) -> None:
    page = tab.page
    _accept_confirmations(tab)
    await tab.sign_in(tab.console.tokens["superadmin"], "/admin/signin?next=/admin/tokens")
    cases = [
        ({"name": "x1", "expires": "tomorrow"}, 400, "is not a duration"),
        ({"name": "x2", "companies": "acme, not a company"}, 400, "is not a company id"),
        ({"name": "-dash"}, 400, "is not a token name"),
        ({"name": "Admin-Token"}, 409, "exists or existed"),
        ({"name": "system"}, 409, "is reserved"),
    ]
    for fields, status, message in cases:
        assert await _create(tab, **fields) == status, fields
        await expect(page.locator("#form-error")).to_contain_text(message)
        await expect(page.get_by_label("Name", exact=True)).to_have_value(fields["name"])
        await expect(page.locator(".new-token")).to_have_count(0)
    await expect(page.get_by_label("Expires in")).to_have_value("")  # the last case's
    names = {
        r[0] for r in await tab.console.runtime.store.pool.fetch("SELECT name FROM api_tokens")
    }
    assert not names & {"x1", "x2", "-dash"}
    # Chromium reports each 400 and 409 answer; nothing else went wrong.
    refused = re.compile(r"console\.error: Failed to load resource: .* status of (400|409) ")
    assert [p for p in tab.problems if not refused.match(p)] == []


async def _tables(tab: Tab) -> dict[str, list[dict[str, Any]]]:
    pool = tab.console.runtime.store.pool
    return {
        "requests": [dict(r) for r in await pool.fetch("SELECT * FROM requests ORDER BY 1")],
        "batches": [dict(r) for r in await pool.fetch("SELECT * FROM batches ORDER BY 1")],
    }


async def test_a_projection_rebuild_shows_its_progress_and_keeps_the_tables(
    tab: Tab, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tab.console.runtime
    agg = ledger(runtime.store)
    for n in range(3):
        ids = await queue_many(agg, 40, company=f"co{n}", prefix=f"b{n}r")
        await run_batch(agg, f"b{n}", ids, fail_every=5)
    await runtime.catch_up()
    before = await _tables(tab)
    head = await runtime.store.head()
    # Hold the rebuild before its swap, with small pages, so the page shows it running.
    release = asyncio.Event()
    real: Callable[..., Awaitable[int]] = rebuilding.rebuild

    async def held(*args: Any, **kwargs: Any) -> int:
        return await real(*args, **kwargs, page_size=50, before_swap=release.wait)

    monkeypatch.setattr(rebuilding, "rebuild", held)
    page = tab.page
    asked = _accept_confirmations(tab)
    await tab.sign_in(tab.console.tokens["superadmin"], "/admin/signin?next=/admin/projections")
    row = page.locator("tr[data-projection=requests]")
    await expect(row.locator(".checkpoint")).to_have_text(f"{head:,}")
    await expect(row.locator(".lag")).to_have_text("0")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Rebuild requests").click()
    assert "Rebuild requests" in asked[0]
    state = row.locator(".rebuild-state")
    await expect(state).to_contain_text("Rebuilding…")
    await expect(state).to_contain_text(f"{head:,} of {head:,} events replayed")
    await expect(state.locator("progress")).to_have_attribute("value", str(head))
    await expect(row.get_by_role("button", name="Rebuild requests")).to_have_count(0)
    # One at a time: a second start is refused while the first runs.
    again = await page.request.post(
        "/admin/projections/requests/rebuild", form={"csrf_token": await tab.csrf_token()}
    )
    assert again.status == 409
    assert "A rebuild of requests is already running" in await again.text()
    release.set()
    await expect(state).to_contain_text("Rebuilt", timeout=5_000)  # polled by admin.js
    await expect(state).to_contain_text(f"{head:,} events in")
    await expect(row.get_by_role("button", name="Rebuild requests")).to_be_visible()
    assert await _tables(tab) == before
    assert tab.problems == []


def test_bench_console_runs_quick(
    db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = list(PAGE_KEYS)  # every page the suite measures, the old day's included
    monkeypatch.setenv("BENCH_CONSOLE_PAGES", ",".join(built))
    out = tmp_path / "bench.json"
    args = ["bench", "console", "--quick", "--json", str(out), "--database-url", db_dsn]
    assert main(args) == 0
    results = msgspec.json.decode(out.read_bytes(), type=dict[str, list[Result]])["results"]
    figures = {r.name: r for r in results}
    for page in built:
        for q in ("p50", "p95", "p99"):
            assert figures[f"console_{page}_{q}"].value > 0
        verdict = figures[f"console_{page}_p95"]
        assert verdict.baseline == "target_p95"
        assert verdict.baseline_value == 50
