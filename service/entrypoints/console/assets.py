"""The console's static files: read once at start, served from memory under a version.

Templates link them with `static_url(name)` (`/admin/static/console.css?v=<hash>`): a
request carrying the current version may be cached for a year, since a changed file
gets a new URL; any other is revalidated (ETag). Only files of the static folder exist.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

from aiohttp import web

from service.entrypoints.console.core import CACHE_CONTROL, Asset, PageError, console

STATIC = Path(__file__).parent / "static"
_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


def load_assets(folder: Path = STATIC) -> dict[str, Asset]:
    """Every file of `folder` by name, with its content type and version."""
    assets = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        assets[path.name] = Asset(
            body, kind or "application/octet-stream", hashlib.sha256(body).hexdigest()[:16]
        )
    return assets


async def static_file(request: web.Request) -> web.StreamResponse:
    """GET /admin/static/{name}."""
    asset = console(request).assets.get(request.match_info["name"])
    if asset is None:
        raise PageError(404, "There is no such file.")
    etag = f'"{asset.version}"'
    if request.query.get("v") == asset.version:
        request[CACHE_CONTROL] = "public, max-age=31536000, immutable"
    else:
        request[CACHE_CONTROL] = "no-cache"
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    charset = "utf-8" if asset.content_type.startswith("text/") else None
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset=charset, headers={"ETag": etag}
    )
