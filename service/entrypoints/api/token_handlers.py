"""Token administration over HTTP, for superadmin tokens: list, create, revoke."""

from __future__ import annotations

import msgspec
from aiohttp import web

from service.adapters.tokens import (
    NameTaken,
    Principal,
    Role,
    TokenError,
    create_token,
    get_token,
    list_tokens,
    parse_duration,
    revoke_token,
)
from service.entrypoints.api import schemas as s
from service.entrypoints.api.deps import PRINCIPAL
from service.entrypoints.api.errors import ApiError
from service.entrypoints.api.handlers import actor, deps, path_id
from service.entrypoints.api.io import parse_body, parse_query, respond
from service.logs import get_logger

_log = get_logger("api")


async def list_all(request: web.Request) -> web.Response:
    """Every token with its role, scope, dates and who created and revoked it.

    A superadmin limited to companies sees the tokens limited to those companies.
    """
    parse_query(request, s.NoQuery)
    within = request[PRINCIPAL].companies
    found = await list_tokens(deps(request).store.pool, within=within)
    items = [s.TokenItem(**{**msgspec.structs.asdict(t), "role": t.role.name}) for t in found]
    return respond(s.TokensResponse(tokens=items))


def _grantable(grantor: Principal, companies: list[str] | None) -> None:
    """A 403 unless the caller may grant a token over these companies."""
    if grantor.companies is None:
        return
    if companies is None:
        raise ApiError(403, "forbidden", "a token limited to companies cannot grant every company")
    outside = sorted(set(companies) - grantor.companies)
    if outside:
        raise ApiError(403, "forbidden", f"this token cannot grant {', '.join(outside)}")


async def create(request: web.Request) -> web.Response:
    """Create a token and answer it this once; the response must not be cached."""
    parse_query(request, s.NoQuery)
    body = await parse_body(request, s.TokenBody)
    _grantable(request[PRINCIPAL], body.companies)
    by = actor(request).name
    try:
        expires_in = parse_duration(body.expires_in) if body.expires_in else None
        token = await create_token(
            deps(request).store.pool,
            body.name,
            Role[body.role],
            by=by,
            companies=body.companies,
            expires_in=expires_in,
        )
    except NameTaken as exc:
        raise ApiError(409, "token_name_taken", str(exc)) from None
    except TokenError as exc:
        raise ApiError(400, "invalid_body", str(exc)) from None
    created = await get_token(deps(request).store.pool, body.name)
    assert created is not None
    _log.info("token.created", name=body.name, role=body.role, companies=body.companies, by=by)
    answer = s.TokenCreatedResponse(
        name=body.name,
        role=body.role,
        token=token,
        companies=created.companies,
        expires_at=created.expires_at,
    )
    response = respond(answer, 201)
    response.headers["Cache-Control"] = "no-store"
    return response


async def revoke(request: web.Request) -> web.Response:
    """Revoke the active token of that name, effective at once (its open streams end too)."""
    parse_query(request, s.NoQuery)
    name, by = path_id(request), actor(request).name
    within = request[PRINCIPAL].companies
    if not await revoke_token(deps(request).store.pool, name, by=by, within=within):
        raise ApiError(404, "not_found", f"no active token named {name!r}")
    _log.info("token.revoked", name=name, by=by)
    return respond(s.TokenRevokedResponse(name=name))
