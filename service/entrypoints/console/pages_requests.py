"""The requests pages: list, search, export, detail with its audit timeline, requeue.
PLACEHOLDERS until #16's requests page lands."""

from __future__ import annotations

from aiohttp import web

from service.adapters.tokens import Role
from service.entrypoints.console.core import ConsoleRoute, PageError
from service.entrypoints.console.rendering import render


async def requests_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/requests (PLACEHOLDER)."""
    what = "Requests by status, with filters, search, paging and CSV export."
    return render(request, "placeholder.html", {"title": "Requests", "what": what})


async def requeue_placeholder(request: web.Request) -> web.StreamResponse:
    """POST /admin/requests/requeue (PLACEHOLDER, admin): the requests page replaces it.
    It changes nothing; tests use it to show that the role check holds for POSTs."""
    raise PageError(
        501,
        "Requeueing from the console is not built yet; use the admin API:"
        " POST /api/admin/legacy/requests/requeue.",
    )


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/requests", requests_page, Role.support, name="requests"),
    # PLACEHOLDER: replaced by the requests page's real requeue action (same path, role).
    ConsoleRoute("POST", "/requests/requeue", requeue_placeholder, Role.admin),
)
