"""The console's pages. PLACEHOLDERS: each is a heading and a line until #16's page
authors build it (docs/console.md, "Adding a page"); the routes, roles and navigation
are already the final ones.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from service.adapters.tokens import Role
from service.entrypoints.console.core import ConsoleRoute, PageError, companies, deps
from service.entrypoints.console.rendering import render


async def overview(request: web.Request) -> web.StreamResponse:
    """GET /admin/: the overview (PLACEHOLDER; its `activity` fragment shows the live
    refresh convention)."""
    seen = companies(request)
    head = await deps(request).store.head(scopes=None if seen is None else sorted(seen))
    context = {"title": "Overview", "head": head, "now": datetime.now(UTC)}
    return render(request, "overview.html", context, live=True)


async def requests_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/requests (PLACEHOLDER)."""
    what = "Requests by status, with filters, search, paging and CSV export."
    return render(request, "placeholder.html", {"title": "Requests", "what": what})


async def batches_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/batches (PLACEHOLDER)."""
    what = "Batches with their OpenAI ids, status, counts and timeline."
    return render(request, "placeholder.html", {"title": "Batches", "what": what})


async def tokens_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/tokens (PLACEHOLDER)."""
    what = "API tokens: create, list and revoke."
    return render(request, "placeholder.html", {"title": "Tokens", "what": what})


async def projections_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/projections (PLACEHOLDER)."""
    what = "Projection checkpoints, lag, and rebuilds."
    return render(request, "placeholder.html", {"title": "Projections", "what": what})


async def requeue_placeholder(request: web.Request) -> web.StreamResponse:
    """POST /admin/requests/requeue (PLACEHOLDER, admin): the requests page replaces it.
    It changes nothing; tests use it to show that the role check holds for POSTs."""
    raise PageError(
        501,
        "Requeueing from the console is not built yet; use the admin API:"
        " POST /api/admin/legacy/requests/requeue.",
    )


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/", overview, Role.support, name="overview"),
    ConsoleRoute("GET", "/requests", requests_page, Role.support, name="requests"),
    ConsoleRoute("GET", "/batches", batches_page, Role.support, name="batches"),
    ConsoleRoute("GET", "/tokens", tokens_page, Role.superadmin, name="tokens"),
    ConsoleRoute("GET", "/projections", projections_page, Role.superadmin, name="projections"),
    # PLACEHOLDER: replaced by the requests page's real requeue action (same path, role).
    ConsoleRoute("POST", "/requests/requeue", requeue_placeholder, Role.admin),
)
