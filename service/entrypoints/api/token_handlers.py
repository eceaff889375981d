"""Token administration over HTTP, for superadmin tokens: list, create, revoke."""

from __future__ import annotations

import msgspec
from aiohttp import web

from service.adapters.tokens import Role, TokenError, create_token, list_tokens, revoke_token
from service.entrypoints.api import schemas as s
from service.entrypoints.api.errors import ApiError
from service.entrypoints.api.handlers import actor, deps, path_id
from service.entrypoints.api.io import parse_body, parse_query, respond
from service.logs import get_logger

_log = get_logger("api")


async def list_all(request: web.Request) -> web.Response:
    """Every token with its role, dates and who created and revoked it."""
    parse_query(request, s.NoQuery)
    found = await list_tokens(deps(request).store.pool)
    items = [s.TokenItem(**{**msgspec.structs.asdict(t), "role": t.role.name}) for t in found]
    return respond(s.TokensResponse(tokens=items))


async def create(request: web.Request) -> web.Response:
    """Create a token and answer it this once; the response must not be cached."""
    parse_query(request, s.NoQuery)
    body = await parse_body(request, s.TokenBody)
    by = actor(request).name
    try:
        token = await create_token(deps(request).store.pool, body.name, Role[body.role], by=by)
    except TokenError as exc:
        raise ApiError(409, "token_name_taken", str(exc)) from None
    _log.info("token.created", name=body.name, role=body.role, by=by)
    response = respond(s.TokenCreatedResponse(name=body.name, role=body.role, token=token), 201)
    response.headers["Cache-Control"] = "no-store"
    return response


async def revoke(request: web.Request) -> web.Response:
    """Revoke the active token of that name, effective on its next request."""
    parse_query(request, s.NoQuery)
    name, by = path_id(request), actor(request).name
    if not await revoke_token(deps(request).store.pool, name, by=by):
        raise ApiError(404, "not_found", f"no active token named {name!r}")
    _log.info("token.revoked", name=name, by=by)
    return respond(s.TokenRevokedResponse(name=name))
