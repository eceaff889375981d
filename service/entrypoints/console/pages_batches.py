"""The batches pages: list, detail with requests and timeline, cancel. PLACEHOLDERS until
#16's batches page lands."""

from __future__ import annotations

from aiohttp import web

from service.adapters.tokens import Role
from service.entrypoints.console.core import ConsoleRoute
from service.entrypoints.console.rendering import render


async def batches_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/batches (PLACEHOLDER)."""
    what = "Batches with their OpenAI ids, status, counts and timeline."
    return render(request, "placeholder.html", {"title": "Batches", "what": what})


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/batches", batches_page, Role.support, name="batches"),
)
