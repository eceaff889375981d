"""Admin console sessions: server-side in PostgreSQL, so every instance shares them.

A session is opened by exchanging a valid API token (checked by `tokens.verify`); the
browser then holds only a random 256-bit session id, and the table only its SHA-256. A
session is alive while all of these hold:

* it was used within the idle timeout (`last_seen_at`, moved by `load_session`);
* its absolute expiry (`expires_at`, fixed at sign-in) is in the future;
* its token is neither revoked nor expired: revoking a token ends its sessions at once.

Each session carries its own CSRF token, which every form of the console sends back.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias

import asyncpg

from service.adapters.tokens import LAST_USE_EVERY, Principal, Role, verify

Conn: TypeAlias = "asyncpg.Pool | asyncpg.Connection"

_SESSION_ID = re.compile(r"[A-Za-z0-9_\-]{43}")  # secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Session:
    """A live session: whose it is, its CSRF token and its absolute expiry."""

    id_hash: str
    principal: Principal
    csrf: str
    expires_at: datetime


@dataclass(frozen=True)
class NewSession:
    """A session just opened; `session_id` (the cookie's value) exists nowhere else."""

    session_id: str
    session: Session


def session_hash(session_id: str) -> str:
    """What the table keeps of a session id."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def _well_formed(session_id: str) -> bool:
    return _SESSION_ID.fullmatch(session_id) is not None


async def create_session(conn: Conn, token: str, *, max_age: timedelta) -> NewSession | None:
    """A session for a valid token, ending at the latest after `max_age`; None when the
    token is not valid (unknown, malformed, wrong, revoked or expired)."""
    principal = await verify(conn, token)
    if principal is None:
        return None
    session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    id_hash = session_hash(session_id)
    expires_at: datetime = await conn.fetchval(
        "INSERT INTO console_sessions (id_hash, token_id, csrf, expires_at)"
        " VALUES ($1, $2, $3, now() + $4::interval) RETURNING expires_at",
        id_hash,
        principal.token_id,
        csrf,
        max_age,
    )
    return NewSession(session_id, Session(id_hash, principal, csrf, expires_at))


# A session row joined with its token, alive by all three rules of the module docstring.
_ALIVE = (
    "s.token_id = t.token_id AND s.last_seen_at > now() - $2::interval"
    " AND s.expires_at > now() AND t.revoked_at IS NULL"
    " AND (t.expires_at IS NULL OR t.expires_at > now())"
)
_COLUMNS = (
    "s.id_hash, s.csrf, s.expires_at, t.token_id, t.name, t.role, t.companies,"
    " t.expires_at AS token_expires_at"
)

# Touching also records the token's use (at most once a minute, as the API does), in the
# same statement: a console session is that token at work.
_TOUCH = (
    "WITH s AS ("
    f" UPDATE console_sessions s SET last_seen_at = now() FROM api_tokens t"
    f" WHERE s.id_hash = $1 AND {_ALIVE} RETURNING {_COLUMNS},"
    " t.last_used_at IS NULL OR t.last_used_at < now() - $3::interval AS stale_use"
    "), used AS ("
    " UPDATE api_tokens SET last_used_at = now()"
    " WHERE token_id = (SELECT token_id FROM s WHERE stale_use)"
    ") SELECT * FROM s"
)
_PEEK = f"SELECT {_COLUMNS} FROM console_sessions s, api_tokens t WHERE s.id_hash = $1 AND {_ALIVE}"


async def load_session(
    conn: Conn, session_id: str, *, idle: timedelta, touch: bool = True
) -> Session | None:
    """The live session of this id, else None. With `touch` (a person's request) its idle
    clock restarts; without (a background refresh, the live channel) it does not."""
    if not _well_formed(session_id):
        return None  # never sent to the database
    id_hash = session_hash(session_id)
    if touch:
        row = await conn.fetchrow(_TOUCH, id_hash, idle, LAST_USE_EVERY)
    else:
        row = await conn.fetchrow(_PEEK, id_hash, idle)
    if row is None:
        return None
    companies = row["companies"]
    principal = Principal(
        row["token_id"],
        row["name"],
        Role[row["role"]],
        None if companies is None else frozenset(companies),
        row["token_expires_at"],
    )
    return Session(row["id_hash"], principal, row["csrf"], row["expires_at"])


async def live_sessions(conn: Conn, id_hashes: Sequence[str], *, idle: timedelta) -> set[str]:
    """Which of these sessions (by hash) are alive now; none is touched."""
    rows = await conn.fetch(
        "SELECT s.id_hash FROM console_sessions s, api_tokens t"
        f" WHERE s.id_hash = ANY($1::text[]) AND {_ALIVE}",
        list(id_hashes),
        idle,
    )
    return {r[0] for r in rows}


async def delete_session(conn: Conn, session_id: str) -> bool:
    """End a session (signing out); False when there was none."""
    if not _well_formed(session_id):
        return False
    done = await conn.execute(
        "DELETE FROM console_sessions WHERE id_hash = $1", session_hash(session_id)
    )
    return bool(done.endswith(" 1"))


async def purge_expired(conn: Conn, *, idle: timedelta) -> int:
    """Delete every session that can no longer be used; how many were deleted."""
    done = await conn.execute(
        "DELETE FROM console_sessions s WHERE s.expires_at <= now()"
        " OR s.last_seen_at <= now() - $1::interval"
        " OR EXISTS (SELECT 1 FROM api_tokens t WHERE t.token_id = s.token_id"
        " AND (t.revoked_at IS NOT NULL OR t.expires_at <= now()))",
        idle,
    )
    return int(done.rsplit(" ", 1)[-1])
