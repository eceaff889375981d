"""The console's route table: every route, its method and its minimum role, in one place.

create_console registers exactly these and the guard checks each request against its
entry, so a route cannot exist without a role decision. A new pages module adds its
`ROUTES` to CONSOLE_ROUTES below.
"""

from __future__ import annotations

from service.entrypoints.console import (
    auth,
    live,
    pages,
    pages_admin,
    pages_batches,
    pages_requests,
)
from service.entrypoints.console.assets import static_file
from service.entrypoints.console.core import ConsoleRoute

CONSOLE_ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/static/{name}", static_file, None),
    *auth.ROUTES,
    *live.ROUTES,
    *pages.ROUTES,
    *pages_requests.ROUTES,
    *pages_batches.ROUTES,
    *pages_admin.ROUTES,
)

_BY_KEY = {(r.method, r.path): r for r in CONSOLE_ROUTES}


def console_route(method: str, path: str) -> ConsoleRoute | None:
    """The entry of a matched route (`path` relative to the mount; HEAD is GET)."""
    return _BY_KEY.get(("GET" if method == "HEAD" else method, path))
