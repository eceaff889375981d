"""Bearer tokens: 256-bit secrets, stored as SHA-256 hashes, compared in constant time.

A token may be limited to companies (None: every company) and may expire; its last use
is recorded at most once a minute.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

import asyncpg
import msgspec

from service.actors import CLI, SYSTEM_ACTORS

LAST_USE_EVERY = timedelta(minutes=1)


class Role(IntEnum):
    """Roles in rising order of power."""

    support = 1
    admin = 2
    superadmin = 3


@dataclass(frozen=True)
class Principal:
    """Who a valid token belongs to: its role, and the companies it may see (None: all)."""

    token_id: str
    name: str
    role: Role
    companies: frozenset[str] | None = None
    expires_at: datetime | None = None

    def sees(self, company_id: str) -> bool:
        """Whether this token may see and touch a company's data."""
        return self.companies is None or company_id in self.companies


class TokenError(ValueError):
    """A token command that cannot be carried out."""


class NameTaken(TokenError):
    """The name is used (or was, in any case), or reserved for the service's own actors."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# The API's id rule, starting with a letter or digit: a name beginning with "-" would read
# as an option on the command line, where tokens are revoked by name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@\-]{0,199}")
_COMPANY = re.compile(r"[A-Za-z0-9._:@\-]{1,200}")
_SHAPE = re.compile(r"bl_([0-9a-f]{16})_([A-Za-z0-9_\-]{20,100})")
_DURATION = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _split(token: str) -> tuple[str, str] | None:
    """(token id, secret) of a well-formed token; nothing else is ever sent to the database."""
    match = _SHAPE.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


def token_id_of(token: str) -> str | None:
    """The public id of a well-formed token (safe to log), or None."""
    parts = _split(token)
    return parts[0] if parts else None


def parse_duration(text: str) -> timedelta:
    """`90d`, `12h`, `30m` or `45s` as a timedelta; anything else is a TokenError."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise TokenError(f"{text!r} is not a duration: use a number and s, m, h or d (e.g. 90d)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def check_name(name: str) -> None:
    """A TokenError unless `name` can name a token."""
    if not _NAME.fullmatch(name):
        raise TokenError(
            f"{name!r} is not a token name: use 1-200 letters, digits and . _ : @ -, starting"
            " with a letter or digit (it appears as the actor of events and in URLs)"
        )
    if name.lower() in SYSTEM_ACTORS:
        raise NameTaken(f"{name!r} is reserved: the service writes events under that name")


def _companies(companies: Sequence[str] | None) -> list[str] | None:
    if companies is None:
        return None
    chosen = sorted(set(companies))
    if not chosen:
        raise TokenError("give at least one company, or none for every company")
    for company in chosen:
        if not _COMPANY.fullmatch(company):
            raise TokenError(f"{company!r} is not a company id")
    return chosen


async def create_token(
    conn: asyncpg.Pool | asyncpg.Connection,
    name: str,
    role: Role,
    *,
    by: str = CLI,
    companies: Sequence[str] | None = None,
    expires_in: timedelta | None = None,
) -> str:
    """A new token for `name`; the only time its full value exists outside the client."""
    check_name(name)
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)  # 256-bit secret
    try:
        await conn.execute(
            "INSERT INTO api_tokens (token_id, name, role, secret_hash, created_by, companies,"
            " expires_at) VALUES ($1, $2, $3, $4, $5, $6, now() + $7::interval)",
            token_id,
            name,
            role.name,
            _hash(secret),
            by,
            _companies(companies),
            expires_in,
        )
    except asyncpg.UniqueViolationError:
        raise NameTaken(
            f"a token named {name!r} (in any case) exists or existed; names are never reused,"
            " because events record them as actors: pick another name"
        ) from None
    return f"bl_{token_id}_{secret}"


async def revoke_token(
    conn: asyncpg.Pool | asyncpg.Connection,
    name: str,
    *,
    by: str = CLI,
    within: frozenset[str] | None = None,
) -> bool:
    """Revoke by name; False when no active token of that name is `within` those companies."""
    done = await conn.execute(
        "UPDATE api_tokens SET revoked_at = now(), revoked_by = $2"
        " WHERE name = $1 AND revoked_at IS NULL"
        " AND ($3::text[] IS NULL OR (companies IS NOT NULL AND companies <@ $3::text[]))",
        name,
        by,
        None if within is None else sorted(within),
    )
    return bool(done.endswith(" 1"))


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A token as listed: never its secret or its hash (`token_id` is its public part)."""

    token_id: str
    name: str
    role: Role
    companies: list[str] | None = None
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None


_INFO = (
    "SELECT token_id, name, role, companies, created_at, created_by, expires_at, last_used_at,"
    " revoked_at, revoked_by FROM api_tokens"
)


def _info(row: asyncpg.Record) -> TokenInfo:
    return TokenInfo(**{**dict(row), "role": Role[row["role"]]})


async def list_tokens(
    conn: asyncpg.Pool | asyncpg.Connection, *, within: frozenset[str] | None = None
) -> list[TokenInfo]:
    """Every token (those limited to companies `within`, when given) with its dates."""
    rows = await conn.fetch(
        f"{_INFO} WHERE $1::text[] IS NULL OR (companies IS NOT NULL AND companies <@ $1::text[])"
        " ORDER BY created_at, name",
        None if within is None else sorted(within),
    )
    return [_info(r) for r in rows]


async def get_token(conn: asyncpg.Pool | asyncpg.Connection, name: str) -> TokenInfo | None:
    """One token by name."""
    row = await conn.fetchrow(f"{_INFO} WHERE name = $1", name)
    return _info(row) if row else None


async def verify(conn: asyncpg.Pool | asyncpg.Connection, token: str) -> Principal | None:
    """The principal of an active token, else None (unknown, malformed, wrong, revoked, expired)."""
    parts = _split(token)
    if parts is None:
        return None
    token_id, secret = parts
    row = await conn.fetchrow(
        "SELECT name, role, secret_hash, companies, expires_at,"
        " last_used_at IS NULL OR last_used_at < now() - $2::interval AS stale_use"
        " FROM api_tokens WHERE token_id = $1 AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > now())",
        token_id,
        LAST_USE_EVERY,
    )
    expected = row["secret_hash"] if row else _hash("")  # same work when the id is unknown
    matches = hmac.compare_digest(_hash(secret), expected)
    if row is None or not matches:
        return None
    if row["stale_use"]:
        await conn.execute(
            "UPDATE api_tokens SET last_used_at = now() WHERE token_id = $1", token_id
        )
    companies = row["companies"]
    return Principal(
        token_id,
        row["name"],
        Role[row["role"]],
        None if companies is None else frozenset(companies),
        row["expires_at"],
    )


async def still_valid(
    conn: asyncpg.Pool | asyncpg.Connection, token_ids: Sequence[str]
) -> set[str]:
    """Which of these tokens are neither revoked nor expired now."""
    rows = await conn.fetch(
        "SELECT token_id FROM api_tokens WHERE token_id = ANY($1::text[])"
        " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        list(token_ids),
    )
    return {r[0] for r in rows}
