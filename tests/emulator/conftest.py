"""An emulator on a free port and the real openai SDK pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import openai
import pytest
from aiohttp import web

from service.emulator.app import EMULATOR, create_emulator_app
from service.emulator.state import Emulator


@dataclass
class Running:
    """A started emulator: its base URL and its state (for assertions only)."""

    url: str
    state: Emulator

    async def knobs(self, **values: object) -> None:
        """Set knobs through the control endpoint, as a test operator would."""
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{self.url}/_emulator/knobs", json=values) as r,
        ):
            assert r.status == 200, await r.text()


@pytest.fixture
async def emulator() -> AsyncIterator[Running]:
    app = create_emulator_app()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Running(f"http://127.0.0.1:{port}", app[EMULATOR])
    await runner.cleanup()


@pytest.fixture
async def client(emulator: Running) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(
        base_url=f"{emulator.url}/v1",
        api_key="sk-test",
        max_retries=0,
        _strict_response_validation=True,
    )
    yield c
    await c.close()
