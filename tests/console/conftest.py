"""The admin console on a real database, and a real Chromium driven by Playwright.

Chromium is Debian's (/usr/bin/chromium, `apt-get install -y chromium`); Playwright's own
browser download is never used. Without Chromium or Playwright the browser tests are
skipped with the reason, except in CI (CI=true), where they fail instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.adapters.tokens import Role, create_token
from service.config import Settings
from service.entrypoints.api.app import create_app
from service.entrypoints.api.deps import ConsoleSettings, Deps
from service.entrypoints.api.ratelimit import RateLimiter
from service.entrypoints.api.server import build_deps
from service.entrypoints.runtime import Runtime
from tests.conftest import Running

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

CHROMIUM = Path("/usr/bin/chromium")
SCOPED_COMPANY = "acme"


@dataclass
class Console:
    """A running API with its console: base URL, an HTTP client, the runtime (its OpenAI is
    the emulator), tokens by role ("support", "admin", "superadmin") and "scoped" (a
    support token for acme)."""

    url: str
    client: TestClient  # type: ignore[type-arg]
    runtime: Runtime
    tokens: dict[str, str]
    emulator: Running
    deps: Deps  # what the app was built from: a test may serve it again (a restart)


ConsoleFactory = Callable[..., Awaitable[Console]]


@pytest.fixture
async def console_factory(db_dsn: str, emulator: Running) -> AsyncIterator[ConsoleFactory]:
    """Start consoles: `await console_factory(idle=timedelta(seconds=2), auth_failures=2)`."""
    made: list[tuple[TestClient, Runtime]] = []  # type: ignore[type-arg]

    async def make(
        *,
        idle: timedelta = timedelta(minutes=30),
        max_age: timedelta = timedelta(hours=12),
        auth_failures: int = 100_000,
        secure_cookies: bool = False,
        enabled: bool = True,
        openai_dashboard: bool = False,  # True: as with OpenAI's own API (not the emulator)
    ) -> Console:
        settings = Settings(
            batch_creation_interval_seconds=0,
            batch_polling_interval_seconds=0,
            console_enabled=enabled,
        )
        # Cancelling a batch calls OpenAI; pages seed their data by running the pipeline.
        client = openai.AsyncOpenAI(base_url=f"{emulator.url}/v1", api_key="sk-test", max_retries=0)
        runtime = await Runtime.open(settings, db_dsn, client)
        deps = await build_deps(runtime.store, runtime.app, runtime.metrics, settings)
        deps = replace(
            deps,
            token_limiter=RateLimiter(100_000),
            auth_failure_limiter=RateLimiter(auth_failures),
            heartbeat_seconds=1.0,
            token_check_seconds=0.3,  # revocations and expiries end live channels quickly
            console=(
                ConsoleSettings(idle, max_age, secure_cookies, openai_dashboard)
                if enabled
                else None
            ),
        )
        test_client = TestClient(TestServer(create_app(deps), host="127.0.0.1"))
        await test_client.start_server()
        made.append((test_client, runtime))
        pool = runtime.store.pool
        tokens = {role.name: await create_token(pool, f"{role.name}-token", role) for role in Role}
        tokens["scoped"] = await create_token(
            pool, "scoped-token", Role.support, companies=[SCOPED_COMPANY]
        )
        url = str(test_client.make_url("")).rstrip("/")
        return Console(url, test_client, runtime, tokens, emulator, deps)

    yield make
    for test_client, runtime in made:
        await test_client.close()
        await runtime.close()


@pytest.fixture
async def console(console_factory: ConsoleFactory) -> Console:
    """A console with the default session settings."""
    return await console_factory()


def _browser_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: run `.venv/bin/pip install -e '.[dev]'`"
    if not CHROMIUM.exists():
        return (
            f"Chromium is not at {CHROMIUM}: install Debian's with `apt-get install -y chromium`"
            " (Playwright's own browser download is not used)"
        )
    return None


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for the whole run; each test gets its own context (cookies)."""
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {missing}")
        pytest.skip(missing)
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = await p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield launched
        await launched.close()


@dataclass
class Tab:
    """A page in a fresh browser context, and what the browser complained about."""

    page: Page
    context: BrowserContext
    console: Console
    problems: list[str] = field(default_factory=list)

    async def sign_in(self, token: str, path: str = "/admin/signin") -> None:
        await self.page.goto(path)
        await self.page.get_by_label("API token").fill(token)
        async with self.page.expect_navigation():
            await self.page.get_by_role("button", name="Sign in").click()

    async def csrf_token(self) -> str:
        value = await self.page.locator("input[name=csrf_token]").first.get_attribute("value")
        assert value
        return value


TabFactory = Callable[..., Awaitable[Tab]]


@pytest.fixture
async def tab_factory(browser: Browser) -> AsyncIterator[TabFactory]:
    """Open tabs on a console: `await tab_factory(console, viewport={...})`."""
    contexts: list[BrowserContext] = []

    async def make(on: Console, **options: Any) -> Tab:
        context = await browser.new_context(base_url=on.url, **options)
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(5_000)
        tab = Tab(page, context, on)
        page.on(
            "console",
            lambda m: (
                tab.problems.append(f"console.{m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        page.on("pageerror", lambda e: tab.problems.append(f"page error: {e}"))
        return tab

    yield make
    for context in contexts:
        await context.close()


@pytest.fixture
async def tab(console: Console, tab_factory: TabFactory) -> Tab:
    """A tab on the default console."""
    return await tab_factory(console)


def path_of(url: str) -> str:
    """The path and query of a URL."""
    return re.sub(r"^https?://[^/]+", "", url)
