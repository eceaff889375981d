"""The overview page. PLACEHOLDER until #16's overview lands; the other pages live in
pages_requests, pages_batches and pages_admin."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from service.adapters.tokens import Role
from service.entrypoints.console.core import ConsoleRoute, companies, deps
from service.entrypoints.console.rendering import render


async def overview(request: web.Request) -> web.StreamResponse:
    """GET /admin/: the overview (PLACEHOLDER; its `activity` fragment shows the live
    refresh convention)."""
    seen = companies(request)
    head = await deps(request).store.head(scopes=None if seen is None else sorted(seen))
    context = {"title": "Overview", "head": head, "now": datetime.now(UTC)}
    return render(request, "overview.html", context, live=True)


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/", overview, Role.support, name="overview"),
)
