"""What a projection is: a name, the tables it owns, and how it applies a chunk of events."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Protocol

import asyncpg

from eventstore import RecordedEvent
from statemachine.events import DomainEvent

Decoded = tuple[RecordedEvent, DomainEvent]
Tables = Mapping[str, str]
"""Logical table name -> physical name (the live table, or its rebuild shadow)."""


class Projection(Protocol):
    """Applies events to tables it alone writes."""

    name: str
    tables: tuple[str, ...]
    categories: tuple[str, ...]

    async def apply(
        self, conn: asyncpg.Connection, tables: Tables, events: Sequence[Decoded]
    ) -> None:
        """Write the effect of `events` (in position order) inside the caller's transaction."""


def live_tables(projection: Projection) -> dict[str, str]:
    """The live physical names: the logical names themselves."""
    return {t: t for t in projection.tables}


def leader_key(name: str) -> int:
    """Session advisory lock held by the one runner of a projection across instances."""
    return (0x6270 << 32) | zlib.crc32(name.encode())


def chunk_key(name: str) -> int:
    """Transaction advisory lock taken by every chunk and by a rebuild's swap."""
    return (0x6271 << 32) | zlib.crc32(name.encode())


ID_SEPARATOR = "\x1f"
ID_LIST = "string_to_array($1, chr(31))"
"""SQL for a list of ids sent as one string: asyncpg encodes a text[] element by element."""


def join_ids(ids: Sequence[str]) -> str:
    """The ids as the one parameter ID_LIST splits (ids never contain the unit separator)."""
    return ID_SEPARATOR.join(ids)


async def upsert(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
    key: str,
    rows: Sequence[tuple[object, ...]],
) -> None:
    """Insert or replace rows by `key`: binary COPY into a staging table, then one upsert.

    COPY encodes values several times faster than array parameters, which matters when a
    rebuild rewrites hundreds of thousands of rows.
    """
    if not rows:
        return
    stage = f"stage_{table}"
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS)"
        " ON COMMIT DELETE ROWS"
    )
    await conn.copy_records_to_table(stage, records=rows, columns=list(columns))
    names = ", ".join(columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    await conn.execute(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage}"
        f" ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )
    await conn.execute(f"TRUNCATE {stage}")
