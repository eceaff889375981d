"""create_console: the admin console as an aiohttp sub-application, mounted at /admin/.

The API's middlewares wrap it (request ids; its JSON error middleware, which never sees
a console error because the console's guard answers every one as a page first; bearer
authentication, which passes the console's routes, unknown to the API's table).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
from aiohttp import web

from service.adapters.sessions import live_sessions
from service.entrypoints.api.deps import ConsoleSettings, Deps
from service.entrypoints.api.watch import Validity, Watch, keep_watching
from service.entrypoints.console.assets import load_assets
from service.entrypoints.console.core import CONSOLE, PREFIX, Console
from service.entrypoints.console.guard import console_headers, guard
from service.entrypoints.console.pages_admin import rebuild_jobs
from service.entrypoints.console.rendering import setup_templates
from service.entrypoints.console.routes import CONSOLE_ROUTES
from service.entrypoints.console.settle import Projected, checkpoints_reader
from service.logs import get_logger

SESSION_WATCH = web.AppKey("console_session_watch", Watch)


def _session_validity(idle: timedelta) -> Validity:
    async def valid(pool: asyncpg.Pool, id_hashes: Sequence[str]) -> set[str]:
        return await live_sessions(pool, id_hashes, idle=idle)

    return valid


def create_console(deps: Deps, settings: ConsoleSettings | None = None) -> web.Application:
    """The console on the API's collaborators (`settings` default to `deps.console`)."""
    chosen = settings or deps.console or ConsoleSettings()
    duplicated = [
        k for k, n in Counter((r.method, r.path) for r in CONSOLE_ROUTES).items() if n > 1
    ]
    if duplicated:
        raise ValueError(f"console routes listed twice: {duplicated}")
    app = web.Application(middlewares=[guard])
    watch = Watch(deps.store.pool, deps.token_check_seconds, _session_validity(chosen.idle))
    projected = Projected(checkpoints_reader(deps.store.pool))
    app[CONSOLE] = Console(deps, chosen, watch, get_logger("console"), projected, load_assets())
    app[SESSION_WATCH] = watch
    app.cleanup_ctx.append(keep_watching(SESSION_WATCH))
    app.cleanup_ctx.append(rebuild_jobs)  # projection rebuilds started from the console
    app.on_shutdown.append(_end_streams)
    app.on_cleanup.append(_stop_projected)
    app.on_response_prepare.append(console_headers)
    setup_templates(app, app[CONSOLE].assets)
    for route in CONSOLE_ROUTES:
        if route.method == "GET":
            app.router.add_get(route.path, route.handler, name=route.name, allow_head=True)
        else:
            app.router.add_route(route.method, route.path, route.handler, name=route.name)
    return app


async def redirect_to_console(request: web.Request) -> web.StreamResponse:
    """GET /admin: the console lives under /admin/."""
    return web.Response(status=301, headers={"Location": f"{PREFIX}/"})


async def _stop_projected(app: web.Application) -> None:
    await app[CONSOLE].projected.close()


async def _end_streams(app: web.Application) -> None:
    # As the API's: open live channels end so that a stopping server need not wait.
    app[SESSION_WATCH].end_all()
