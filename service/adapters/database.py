"""Database wiring: the migrations of every package, and opening the event store."""

from __future__ import annotations

import asyncpg

from eventstore import Migration, apply_migrations, load_migrations, pending_migrations

MIGRATION_PACKAGES = ("eventstore", "projections", "service")


def all_migrations() -> list[Migration]:
    """Every package's migrations, in dependency order."""
    return [m for package in MIGRATION_PACKAGES for m in load_migrations(package)]


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations to the database at `dsn`; returns the names applied."""
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn, all_migrations())
    finally:
        await conn.close()


async def pending(dsn: str) -> list[str]:
    """Names of migrations not yet applied at `dsn`."""
    conn = await asyncpg.connect(dsn)
    try:
        return await pending_migrations(conn, all_migrations())
    finally:
        await conn.close()
