"""Versioned, idempotent SQL migrations, applied under an advisory lock."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

_LOCK_KEY = 0x6261_7463_686D_6967  # "batchmig": serialises concurrent `migrate` runs
_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One SQL file; its name (`<package>/<file>`) orders and identifies it."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL, to detect an applied migration that was edited."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(Exception):
    """An applied migration no longer matches its file."""


def load_migrations(package: str) -> list[Migration]:
    """The `sql/NNNN_*.sql` files shipped in a package, in order."""
    folder = resources.files(package) / "sql"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [Migration(f"{package}/{f.name}", f.read_text(encoding="utf-8")) for f in files]


async def _applied(conn: asyncpg.Connection) -> dict[str, str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT name, checksum FROM schema_migrations")
    return {r["name"]: r["checksum"] for r in rows}


async def pending_migrations(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    """Names of the migrations not yet applied to this database."""
    applied = await _applied(conn)
    return [m.name for m in migrations if m.name not in applied]


async def apply_migrations(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    """Apply what is missing, all in one transaction; returns the names applied."""
    done: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(_LEDGER)
        applied = await _applied(conn)
        for m in migrations:
            if m.name in applied:
                if applied[m.name] != m.checksum:
                    raise MigrationError(f"migration {m.name} was edited after it was applied")
                continue
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", m.name, m.checksum
            )
            done.append(m.name)
    return done
