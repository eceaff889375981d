"""Bearer tokens: 256-bit secrets, stored as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

import asyncpg
import msgspec


class Role(IntEnum):
    """Roles in rising order of power."""

    support = 1
    admin = 2
    superadmin = 3


@dataclass(frozen=True)
class Principal:
    """Who a valid token belongs to."""

    token_id: str
    name: str
    role: Role


class TokenError(ValueError):
    """A token command that cannot be carried out."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_NAME = re.compile(r"[A-Za-z0-9._:@\-]{1,200}")  # the API's id rule
_SHAPE = re.compile(r"bl_([0-9a-f]{16})_([A-Za-z0-9_\-]{20,100})")


def _split(token: str) -> tuple[str, str] | None:
    """(token id, secret) of a well-formed token; nothing else is ever sent to the database."""
    match = _SHAPE.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


async def create_token(
    conn: asyncpg.Pool | asyncpg.Connection, name: str, role: Role, *, by: str = "cli"
) -> str:
    """A new token for `name`; the only time its full value exists outside the client."""
    if not _NAME.fullmatch(name):
        raise TokenError(
            f"{name!r} is not a token name: use 1-200 letters, digits and . _ : @ -"
            " (it appears as the actor of events and in URLs)"
        )
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)  # 256-bit secret
    try:
        await conn.execute(
            "INSERT INTO api_tokens (token_id, name, role, secret_hash, created_by)"
            " VALUES ($1, $2, $3, $4, $5)",
            token_id,
            name,
            role.name,
            _hash(secret),
            by,
        )
    except asyncpg.UniqueViolationError:
        raise TokenError(
            f"a token named {name!r} exists or existed; names are never reused, because events"
            " record them as actors: pick another name"
        ) from None
    return f"bl_{token_id}_{secret}"


async def revoke_token(
    conn: asyncpg.Pool | asyncpg.Connection, name: str, *, by: str = "cli"
) -> bool:
    """Revoke by name; False when no active token has that name."""
    done = await conn.execute(
        "UPDATE api_tokens SET revoked_at = now(), revoked_by = $2"
        " WHERE name = $1 AND revoked_at IS NULL",
        name,
        by,
    )
    return bool(done.endswith(" 1"))


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A token as listed: never its secret or its hash."""

    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None


async def list_tokens(conn: asyncpg.Pool | asyncpg.Connection) -> list[TokenInfo]:
    """Every token's name, role, dates and who created and revoked it."""
    rows = await conn.fetch(
        "SELECT name, role, created_at, created_by, revoked_at, revoked_by FROM api_tokens"
        " ORDER BY created_at, name"
    )
    return [TokenInfo(**{**dict(r), "role": Role[r["role"]]}) for r in rows]


async def verify(conn: asyncpg.Pool | asyncpg.Connection, token: str) -> Principal | None:
    """The principal of an active token, else None (unknown, malformed, wrong or revoked)."""
    parts = _split(token)
    if parts is None:
        return None
    token_id, secret = parts
    row = await conn.fetchrow(
        "SELECT name, role, secret_hash FROM api_tokens WHERE token_id = $1 AND revoked_at IS NULL",
        token_id,
    )
    expected = row["secret_hash"] if row else _hash("")  # same work when the id is unknown
    matches = hmac.compare_digest(_hash(secret), expected)
    if row is None or not matches:
        return None
    return Principal(token_id, row["name"], Role[row["role"]])
