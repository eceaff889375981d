"""The admin console: server-rendered pages at /admin/ on the API's port (DESIGN §10).

An entry point like the API: it calls use cases and reads projections. Only
service/entrypoints/api/app.py (which mounts it) and the tests import it. How to add a
page: docs/console.md, "Adding a page".

* `app.py` — `create_console`: the sub-application, its templates, assets and watch;
* `core.py` — what pages use: `ConsoleRoute`, `PageError`, `deps`, `principal`, `actor`;
* `rendering.py` — `render` (pages and `?fragment=` partials), filters, error pages;
* `guard.py` — the one middleware: sessions, CSRF, Origin, roles, error pages, headers;
* `auth.py` — sign-in and sign-out; `live.py` — the live channel (SSE);
* `assets.py` — the static files, served with a version hash;
* `pages*.py` — the pages; `routes.py` — the route table they all join.
"""
