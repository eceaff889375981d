"""`batchledger console-screenshots`: PNGs of every console page on the demo's data.

In a scratch database on the server given (created here, dropped after): the emulator,
the shipped sample imported and run to the end as `batchledger demo` does, a few tokens,
then the API and console served on a free port and each page saved by Debian's Chromium
through Playwright, signed in with a superadmin token. A page that does not answer 200
is skipped with a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from playwright.async_api import FloatRect, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
WIDE: ViewportSize = {"width": 1280, "height": 900}
NARROW: ViewportSize = {"width": 390, "height": 844}
MAX_HEIGHT = 1400


@dataclass(frozen=True)
class Shot:
    """A page to save: its file name (without .png) and its path."""

    name: str
    path: str
    narrow: bool = False  # also at 390 px, as `<name>-390.png`


async def _demo_data(dsn: str) -> Any:
    """The demo's sample run to the end in the database at `dsn`; the open Runtime."""
    from service import actors
    from service.application.ledger import Actor
    from service.config import Settings
    from service.entrypoints.intake import Importer
    from service.entrypoints.runtime import Runtime
    from service.tools.demo import SAMPLE, _start_emulator, _wait_until_done

    emulator, emulator_url = await _start_emulator()
    settings = Settings(
        openai_base_url=f"{emulator_url}/v1",
        openai_api_key="sk-demo",
        batch_creation_interval_seconds=0.2,
        batch_polling_interval_seconds=0.2,
        console_enabled=True,
    )
    runtime = await Runtime.open(settings, dsn)
    await Importer(runtime.app.ledger, Actor(actors.DEMO_IMPORT)).run(
        str(SAMPLE), "demo", settings.openai_model
    )
    stop = asyncio.Event()
    jobs: list[Coroutine[Any, Any, None]] = [r.run(stop) for r in runtime.runners]
    jobs += [s.run(stop) for s in runtime.schedulers()]
    tasks = [asyncio.ensure_future(j) for j in jobs]
    try:
        await asyncio.wait_for(_wait_until_done(runtime, stop), timeout=300)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await emulator.cleanup()
    await runtime.catch_up()
    return runtime


async def _tokens(pool: Any) -> str:
    """A superadmin token for the screenshots, and a few others to list; the superadmin's."""
    from service.adapters.tokens import Role, create_token, revoke_token

    token = await create_token(pool, "alice", Role.superadmin)
    by = "token:alice"
    await create_token(pool, "bob", Role.admin, by=by, expires_in=timedelta(days=90))
    await create_token(
        pool,
        "livedash-acme",
        Role.support,
        by=by,
        companies=["acme"],
        expires_in=timedelta(days=30),
    )
    await create_token(pool, "old-laptop", Role.admin, by=by)
    await revoke_token(pool, "old-laptop", by=by)
    return token


async def _shots(pool: Any) -> list[Shot]:
    request_id = await pool.fetchval(
        "SELECT request_id FROM requests ORDER BY (status = 'PROCESSING_COMPLETE') DESC,"
        " updated_at DESC LIMIT 1"
    )
    batch_id = await pool.fetchval("SELECT batch_id FROM batches ORDER BY updated_at DESC LIMIT 1")
    return [
        Shot("overview", "/admin/", narrow=True),
        Shot("requests", "/admin/requests?status=processing_complete", narrow=True),
        Shot("request", f"/admin/requests/{request_id}"),
        Shot("batches", "/admin/batches"),
        Shot("batch", f"/admin/batches/{batch_id}"),
        Shot("tokens", "/admin/tokens"),
        Shot("projections", "/admin/projections"),
    ]


async def _capture(base: str, token: str, shots: list[Shot], out: Path) -> list[str]:
    """Save the sign-in page and every shot; the names saved."""
    from playwright.async_api import async_playwright

    saved: list[str] = []
    async with async_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            for size, suffix in ((WIDE, ""), (NARROW, "-390")):
                context = await browser.new_context(
                    base_url=base, viewport=size, locale="en-GB", timezone_id="UTC"
                )
                page = await context.new_page()
                await page.goto("/admin/signin")
                if not suffix:
                    await page.screenshot(path=out / "signin.png")
                    saved.append("signin")
                await page.get_by_label("API token").fill(token)
                async with page.expect_navigation():
                    await page.get_by_role("button", name="Sign in").click()
                for shot in shots:
                    if suffix and not shot.narrow:
                        continue
                    answer = await page.goto(shot.path)
                    if answer is None or answer.status != 200:
                        status = answer.status if answer else "nothing"
                        print(
                            f"skipped {shot.name}: {shot.path} answered {status}", file=sys.stderr
                        )
                        continue
                    await page.wait_for_timeout(300)  # times localised, live status shown
                    name = f"{shot.name}{suffix}"
                    # The whole page, cut at MAX_HEIGHT: long lists would make big files.
                    height = await page.evaluate("document.documentElement.scrollHeight")
                    clip: FloatRect = {
                        "x": 0,
                        "y": 0,
                        "width": size["width"],
                        "height": min(int(height), MAX_HEIGHT),
                    }
                    await page.screenshot(path=out / f"{name}.png", full_page=True, clip=clip)
                    saved.append(name)
                await context.close()
        finally:
            await browser.close()
    return saved


def main(admin_dsn: str, out: Path) -> int:
    """Build the demo data in a scratch database, serve the console, save the PNGs."""
    from service.logs import configure

    if not CHROMIUM.exists():
        print(f"Chromium is not at {CHROMIUM}: apt-get install -y chromium", file=sys.stderr)
        return 2
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        print("Playwright is not installed: .venv/bin/pip install -e '.[dev]'", file=sys.stderr)
        return 2
    configure("WARNING", "console")
    out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(screenshots(admin_dsn, out))


async def screenshots(admin_dsn: str, out: Path) -> int:
    """The screenshots of `main`, in `out` (which exists)."""
    from service.entrypoints.api.app import create_app
    from service.entrypoints.api.server import build_deps
    from service.net import free_port
    from service.tools.bench.runner import _drop_database, _scratch_database

    db = f"batchledger_screens_{os.getpid()}"
    dsn = await _scratch_database(admin_dsn, db)
    try:
        print("running the demo's sample through the pipeline...", file=sys.stderr, flush=True)
        runtime = await _demo_data(dsn)
        runner: web.AppRunner | None = None
        try:
            token = await _tokens(runtime.store.pool)
            deps = await build_deps(runtime.store, runtime.app, runtime.metrics, runtime.settings)
            runner = web.AppRunner(create_app(deps), access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            shots = await _shots(runtime.store.pool)
            saved = await _capture(f"http://127.0.0.1:{port}", token, shots, out)
        finally:
            if runner is not None:
                await runner.cleanup()
            await runtime.close()
    finally:
        with contextlib.suppress(Exception):
            await _drop_database(admin_dsn, db)
    print(f"saved {len(saved)} screenshot(s) in {out}")
    return 0
