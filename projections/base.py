"""What a projection is: a name, the tables it owns, and how it applies a chunk of events."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Generic, Protocol, TypeVar

import asyncpg

from eventstore import RecordedEvent
from statemachine.events import DomainEvent

Decoded = tuple[RecordedEvent, DomainEvent]
Tables = Mapping[str, str]
"""Logical table name -> physical name (the live table, or its rebuild shadow)."""
R = TypeVar("R")


class Replay(Protocol):
    """A rebuild's fold: rows stay in memory across pages and are written once, in bulk."""

    @property
    def held(self) -> int:
        """Rows held in memory (the rebuild flushes above its limit)."""

    async def feed(
        self, conn: asyncpg.Connection, tables: Tables, events: Sequence[Decoded]
    ) -> None:
        """Fold the next events (in position order) into the rows in memory."""

    async def flush(self, conn: asyncpg.Connection, tables: Tables) -> None:
        """Write the rows in memory to the tables and forget them."""

    async def finish(self, conn: asyncpg.Connection, tables: Tables) -> None:
        """Flush, then write what is derived from the whole table (counters)."""


class Projection(Protocol):
    """Applies events to tables it alone writes."""

    name: str
    tables: tuple[str, ...]
    categories: tuple[str, ...]

    async def apply(
        self, conn: asyncpg.Connection, tables: Tables, events: Sequence[Decoded]
    ) -> None:
        """Write the effect of `events` (in position order) inside the caller's transaction."""

    async def resume(self, conn: asyncpg.Connection, tables: Tables) -> None:
        """Repair, when a runner takes the lead, what an older version's runner left out."""

    def replay(self) -> Replay:
        """A fresh in-memory fold for a rebuild into empty tables."""


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
    *,
    fresh: bool = False,
) -> None:
    """Insert or replace rows by `key`: binary COPY into a staging table, then one upsert.

    COPY encodes values several times faster than array parameters, which matters when a
    rebuild rewrites hundreds of thousands of rows. `fresh` says no row with these keys
    exists yet (a rebuild's first write), so the rows are copied straight in.
    """
    if not rows:
        return
    if fresh:
        await conn.copy_records_to_table(table, records=rows, columns=list(columns))
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


class KeyedReplay(Generic[R]):
    """A replay of rows keyed by one id; after a flush it loads back the rows it touches."""

    table: str
    key_field: str
    """The event field naming the row an event touches (`request_id`, `batch_id`)."""

    def __init__(self) -> None:
        self.rows: dict[str, R] = {}
        self.flushed = False

    @property
    def held(self) -> int:
        """Rows held in memory."""
        return len(self.rows)

    async def feed(
        self, conn: asyncpg.Connection, tables: Tables, events: Sequence[Decoded]
    ) -> None:
        """Fold the events, first loading back any touched row an earlier flush wrote."""
        if self.flushed:
            missing = {self.key(event) for _, event in events}.difference(self.rows)
            self.rows.update(await self.load(conn, tables[self.table], list(missing)))
        self.fold(events)

    async def flush(self, conn: asyncpg.Connection, tables: Tables) -> None:
        """Write the rows in memory and forget them."""
        await self.save(conn, tables, fresh=not self.flushed)
        self.rows.clear()
        self.flushed = True

    async def finish(self, conn: asyncpg.Connection, tables: Tables) -> None:
        """Write what is left."""
        await self.flush(conn, tables)

    def key(self, event: DomainEvent) -> str:
        """The id of the row an event touches."""
        return str(getattr(event, self.key_field, ""))

    async def load(self, conn: asyncpg.Connection, table: str, ids: list[str]) -> dict[str, R]:
        """The stored rows with these ids."""
        raise NotImplementedError

    def fold(self, events: Sequence[Decoded]) -> None:
        """Fold events into the rows in memory (pure but for the dicts it updates)."""
        raise NotImplementedError

    async def save(self, conn: asyncpg.Connection, tables: Tables, *, fresh: bool) -> None:
        """Write the rows in memory (`fresh`: none of them is stored yet)."""
        raise NotImplementedError
