"""The console over plain HTTP: mounting, error pages, assets, fragments, the live channel,
and the rules the browser tests rely on."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from aiohttp.test_utils import TestClient

from service.config import ConfigError, load_settings
from service.entrypoints.api.server import console_settings
from service.entrypoints.console.auth import safe_next
from service.entrypoints.console.core import NAV
from service.entrypoints.console.guard import CSP
from service.entrypoints.console.routes import CONSOLE_ROUTES, console_route
from service.tools.synthetic import ledger, queue_many
from tests.console.conftest import Console, ConsoleFactory

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def sign_in(client: TestClient, token: str) -> str:  # type: ignore[type-arg]
    """Sign in with the client's cookie jar; the session's CSRF token."""
    form = await (await client.get("/admin/signin")).text()
    match = CSRF.search(form)
    assert match
    r = await client.post(
        "/admin/signin", data={"csrf_token": match.group(1), "token": token}, allow_redirects=False
    )
    assert r.status == 303, await r.text()
    page = await (await client.get("/admin/")).text()
    found = CSRF.search(page)
    assert found
    return found.group(1)


async def test_admin_without_a_slash_redirects_into_the_console(console: Console) -> None:
    r = await console.client.get("/admin", allow_redirects=False)
    assert r.status == 301
    assert r.headers["Location"] == "/admin/"
    r = await console.client.get("/admin/", allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == "/admin/signin"


async def test_console_errors_are_html_pages_and_api_errors_stay_json(console: Console) -> None:
    c = console.client
    missing = await c.get("/admin/no/such/page")
    assert missing.status == 404
    assert missing.content_type == "text/html"
    assert missing.headers["Content-Security-Policy"] == CSP
    page = await missing.text()
    assert "Check the link" in page
    assert '<a href="/admin/signin">Sign in</a>' in page, "the full error page, not its fallback"
    wrong = await c.put("/admin/signin")
    assert wrong.status == 405
    assert wrong.content_type == "text/html"
    assert set(wrong.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
    assert "links and buttons" in await wrong.text()
    await sign_in(c, console.tokens["support"])
    signed_in = await (await c.get("/admin/no/such/page")).text()
    assert '<a href="/admin/">Back to the overview</a>' in signed_in
    assert "support-token" in signed_in, "the header shows who is signed in"
    api = await c.get("/api/admin/legacy/nope")
    assert api.status == 404
    assert api.content_type == "application/json"
    assert "Content-Security-Policy" not in api.headers
    outside = await c.get("/no/such/path")
    assert outside.content_type == "application/json"


async def test_a_disabled_console_is_not_served(console_factory: ConsoleFactory) -> None:
    off = await console_factory(enabled=False)
    r = await off.client.get("/admin/")
    assert r.status == 404
    assert r.content_type == "application/json"


async def test_static_assets_are_versioned_cached_and_never_listed(console: Console) -> None:
    c = console.client
    page = await (await c.get("/admin/signin")).text()
    css = re.search(r'href="(/admin/static/console\.css\?v=[0-9a-f]+)"', page)
    js = re.search(r'src="(/admin/static/console\.js\?v=[0-9a-f]+)"', page)
    assert css
    assert js
    r = await c.get(css.group(1))
    assert r.status == 200
    assert r.content_type == "text/css"
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert (await c.get(js.group(1))).content_type == "text/javascript"
    unversioned = await c.get("/admin/static/console.css")
    assert unversioned.headers["Cache-Control"] == "no-cache"
    again = await c.get(
        "/admin/static/console.css", headers={"If-None-Match": unversioned.headers["ETag"]}
    )
    assert again.status == 304
    for name in ["nope.css", ".gitignore", "console.css.map"]:  # only the files served
        r = await c.get(f"/admin/static/{name}")
        assert r.status == 404
        assert r.content_type == "text/html"
        assert r.headers["Cache-Control"] == "no-store"


async def test_no_inline_scripts_or_styles_in_any_page(console: Console) -> None:
    c = console.client
    pages = [await (await c.get("/admin/signin")).text()]
    await sign_in(c, console.tokens["superadmin"])
    for route in CONSOLE_ROUTES:
        if route.method == "GET" and "{" not in route.path and route.path != "/live":
            pages.append(await (await c.get(f"/admin{route.path}")).text())
    pages.append(await (await c.get("/admin/nope")).text())
    for html in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), "an inline script"
        assert "<style" not in html, "an inline style sheet"
        assert " style=" not in html, "an inline style"
        assert not re.search(r"\son[a-z]+=", html), "an inline event handler"


async def test_scripts_get_401_instead_of_a_redirect_without_a_session(console: Console) -> None:
    c = console.client
    for path in ["/admin/live", "/admin/?fragment=activity"]:
        r = await c.get(path, allow_redirects=False)
        assert r.status == 401, path
        assert "Sign in again" in await r.text()
    r = await c.post("/admin/signout", headers={"X-CSRF-Token": "x"}, allow_redirects=False)
    assert r.status == 401
    r = await c.post("/admin/signout", data={"csrf_token": "x"}, allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == "/admin/signin"


async def test_a_fragment_renders_only_its_block(console: Console) -> None:
    c = console.client
    await sign_in(c, console.tokens["support"])
    r = await c.get("/admin/?fragment=activity")
    assert r.status == 200
    assert r.content_type == "text/html"
    html = await r.text()
    assert "Log position" in html
    assert "<html" not in html
    assert "<time datetime=" in html
    assert (await c.get("/admin/?fragment=nope")).status == 404
    assert (await c.get("/admin/?fragment=Bad!")).status == 400


async def test_fetch_posts_may_send_the_csrf_token_as_a_header(console: Console) -> None:
    c = console.client
    csrf = await sign_in(c, console.tokens["support"])
    r = await c.post("/admin/signout", headers={"X-CSRF-Token": csrf}, allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == "/admin/signin?signed_out=1"
    assert "Signed out." in await (await c.get(r.headers["Location"])).text()


async def test_secure_cookies_when_configured(console_factory: ConsoleFactory) -> None:
    secure = await console_factory(secure_cookies=True)
    form = await secure.client.get("/admin/signin")
    assert "Secure" in form.headers["Set-Cookie"]
    match = CSRF.search(await form.text())
    assert match
    r = await secure.client.post(
        "/admin/signin",
        data={"csrf_token": match.group(1), "token": secure.tokens["admin"]},
        headers={"Cookie": f"bl_signin={match.group(1)}"},
        allow_redirects=False,
    )
    cookie = next(v for v in r.headers.getall("Set-Cookie") if v.startswith("bl_session="))
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


async def read_frames(response, n: int) -> list[tuple[str, dict]]:  # type: ignore[no-untyped-def,type-arg]
    """The next n SSE events (comments skipped)."""
    out: list[tuple[str, dict]] = []  # type: ignore[type-arg]
    frame: dict[str, str] = {}
    async with asyncio.timeout(5):
        while len(out) < n:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line == "":
                if frame:
                    out.append((frame["event"], json.loads(frame["data"])))
                frame = {}
                continue
            key, _, value = line.partition(": ")
            frame[key] = value
    return out


async def test_the_live_channel_sends_changes_and_ends_with_the_session(console: Console) -> None:
    c = console.client
    csrf = await sign_in(c, console.tokens["admin"])
    agg = ledger(console.runtime.store)
    await queue_many(agg, 1, company="acme", prefix="before")  # before connecting: not sent
    async with c.get("/admin/live") as live:
        assert live.status == 200
        assert live.headers["Content-Type"].startswith("text/event-stream")
        assert live.headers["Cache-Control"] == "no-store"
        await asyncio.sleep(0.1)
        await queue_many(agg, 1, company="beta", prefix="x")
        await console.runtime.catch_up()  # announced once projected
        assert await read_frames(live, 1) == [
            ("change", {"position": 2, "type": "RequestQueued", "stream": "request-x0",
                        "company": "beta"})
        ]  # fmt: skip
        signed_out = await c.post("/admin/signout", data={"csrf_token": csrf})
        assert signed_out.status == 200
        assert await read_frames(live, 1) == [("end", {"reason": "session"})]


async def test_the_navigation_shows_each_page_to_the_roles_its_route_allows() -> None:
    for item in NAV:
        route = console_route("GET", item.path)
        assert route is not None, item
        assert route.role == item.role, item


def test_every_console_route_has_a_role_decision() -> None:
    public = {(r.method, r.path) for r in CONSOLE_ROUTES if r.role is None}
    assert public == {("GET", "/static/{name}"), ("GET", "/signin"), ("POST", "/signin")}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/admin/batches", "/admin/batches"),
        ("/admin/requests?status=failed&cursor=x", "/admin/requests?status=failed&cursor=x"),
        (None, "/admin/"),
        ("", "/admin/"),
        ("https://evil.example/admin/", "/admin/"),
        ("//evil.example/admin/", "/admin/"),
        ("/admin/../api/admin/legacy/tokens", "/admin/"),
        ("/admin\\@evil.example", "/admin/"),
        ("/admin/\r\nSet-Cookie: x=1", "/admin/"),
        ("/admin/signin?next=/admin/", "/admin/"),
        ("/elsewhere", "/admin/"),
    ],
)
def test_next_is_honoured_only_for_console_paths(raw: str | None, expected: str) -> None:
    assert safe_next(raw) == expected


def test_console_settings_come_from_the_environment() -> None:
    defaults = console_settings(load_settings({}))
    assert defaults is not None
    assert defaults.idle.total_seconds() == 30 * 60
    assert defaults.max_age.total_seconds() == 12 * 3600
    assert defaults.secure_cookies is False
    chosen = console_settings(
        load_settings(
            {
                "CONSOLE_SESSION_IDLE_MINUTES": "5",
                "CONSOLE_SESSION_MAX_HOURS": "168",
                "CONSOLE_SECURE_COOKIES": "true",
            }
        )
    )
    assert chosen is not None
    assert (chosen.idle.total_seconds(), chosen.max_age.days, chosen.secure_cookies) == (
        300,
        7,
        True,
    )
    assert console_settings(load_settings({"CONSOLE_ENABLED": "false"})) is None
    for name, value in [
        ("CONSOLE_SESSION_IDLE_MINUTES", "0"),
        ("CONSOLE_SESSION_IDLE_MINUTES", "1441"),
        ("CONSOLE_SESSION_MAX_HOURS", "169"),
        ("CONSOLE_SECURE_COOKIES", "maybe"),
        ("CONSOLE_ENABLED", "2"),
    ]:
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/requests?to=9999-12-31"),
        ("GET", "/admin/requests.csv?to=9999-12-31"),
        ("GET", "/admin/requests/%00"),
        ("POST", "/admin/requests/%00/requeue"),
        ("GET", "/admin/batches?company=a%00b"),
        ("POST", "/admin/tokens/a%00b/revoke"),
    ],
)
async def test_odd_values_in_the_address_get_a_clear_4xx_page_never_a_500(
    console: Console, method: str, path: str
) -> None:
    c = console.client
    csrf = await sign_in(c, console.tokens["superadmin"])
    r = await c.request(method, path, data={"csrf_token": csrf}, allow_redirects=False)
    assert 400 <= r.status < 500, (r.status, await r.text())
    assert r.content_type == "text/html"


HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


async def test_markup_in_a_transcript_is_shown_as_text_never_run(console: Console) -> None:
    c = console.client
    await sign_in(c, console.tokens["support"])
    await queue_many(ledger(console.runtime.store), 1, prefix="x", transcript=HOSTILE)
    await console.runtime.catch_up()
    page = await (await c.get("/admin/requests/x0")).text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page
    assert "<img src=x" not in page


async def test_signing_in_replaces_a_planted_session_id(console: Console) -> None:
    c = console.client
    jar, admin = c.session.cookie_jar, c.make_url("/admin/")
    planted = "attacker-chosen-session-id"
    jar.update_cookies({"bl_session": planted}, admin)  # session fixation: a known id
    await sign_in(c, console.tokens["admin"])
    issued = jar.filter_cookies(admin)["bl_session"].value
    assert issued != planted
    assert len(issued) >= 40  # a fresh random id from the server, not the visitor's
