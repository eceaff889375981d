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
