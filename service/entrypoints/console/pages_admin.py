"""The superadmin pages: tokens and projections. PLACEHOLDERS until #16's admin pages
land."""

from __future__ import annotations

from aiohttp import web

from service.adapters.tokens import Role
from service.entrypoints.console.core import ConsoleRoute
from service.entrypoints.console.rendering import render


async def tokens_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/tokens (PLACEHOLDER)."""
    what = "API tokens: create, list and revoke."
    return render(request, "placeholder.html", {"title": "Tokens", "what": what})


async def projections_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/projections (PLACEHOLDER)."""
    what = "Projection checkpoints, lag, and rebuilds."
    return render(request, "placeholder.html", {"title": "Projections", "what": what})


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/tokens", tokens_page, Role.superadmin, name="tokens"),
    ConsoleRoute("GET", "/projections", projections_page, Role.superadmin, name="projections"),
)
