"""Rebuild a projection from position 0 into shadow tables, then swap them in atomically."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Iterator, Sequence

import asyncpg

from eventstore import EventStore
from projections.base import Projection, Replay, chunk_key
from projections.runner import apply_chunk, decode, relevant

Progress = Callable[[int, int], None]
Hook = Callable[[], Awaitable[None]]
SHADOW = "__rebuild"
RETIRED = "__retired"
MAX_ROWS = 200_000  # rows a projection holds in memory before writing them out (~130 MB)


def shadow_tables(projection: Projection) -> dict[str, str]:
    """The shadow name of each table during a rebuild."""
    return {t: f"{t}{SHADOW}" for t in projection.tables}


async def _prepare(conn: asyncpg.Connection, projection: Projection) -> None:
    # An interrupted rebuild leaves shadows behind: start them afresh. Shadows get only
    # their primary key while replaying; the other indexes are built in bulk at the end,
    # several times faster than maintaining them row by row.
    for table, shadow in shadow_tables(projection).items():
        await conn.execute(f"DROP TABLE IF EXISTS {shadow}")
        await conn.execute(
            f"CREATE TABLE {shadow} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        await conn.execute(f"ALTER TABLE {shadow} ADD PRIMARY KEY ({await _pk(conn, table)})")
    await conn.execute("DELETE FROM projection_checkpoints WHERE name = $1", _shadow_cp(projection))


async def _pk(conn: asyncpg.Connection, table: str) -> str:
    columns = await conn.fetch(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary"
        " ORDER BY array_position(i.indkey, a.attnum)",
        table,
    )
    return ", ".join(r[0] for r in columns)


async def _build_indexes(conn: asyncpg.Connection, projection: Projection) -> None:
    for table, shadow in shadow_tables(projection).items():
        rows = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename = $1 AND indexname NOT IN (SELECT conname FROM pg_constraint"
            " WHERE conrelid = $1::regclass AND contype = 'p')",
            table,
        )
        for name, definition in rows:
            on = f" ON {table} " if f" ON {table} " in definition else f" ON public.{table} "
            shadow_def = definition.replace(f"INDEX {name} ", f"INDEX {name}{SHADOW} ", 1)
            await conn.execute(shadow_def.replace(on, f" ON {shadow} ", 1))


async def _swap(conn: asyncpg.Connection, projection: Projection, position: int) -> None:
    for table, shadow in shadow_tables(projection).items():
        await conn.execute(f"DROP TABLE IF EXISTS {table}{RETIRED}")
        await conn.execute(f"ALTER TABLE {table} RENAME TO {table}{RETIRED}")
        await conn.execute(f"ALTER TABLE {shadow} RENAME TO {table}")
        await _rename_indexes(conn, table)
    await conn.execute(
        "INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2)"
        " ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()",
        projection.name,
        position,
    )


async def _rename_indexes(conn: asyncpg.Connection, table: str) -> None:
    # Keep index names stable across rebuilds: the live table's indexes lose the
    # shadow suffix once the retired table (which held the original names) is gone.
    rows = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1",
        f"{table}{RETIRED}",
    )
    for (name,) in rows:
        await conn.execute(f"ALTER INDEX {name} RENAME TO {name[:50]}_r{abs(hash(name)) % 10**6}")
    rows = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1",
        table,
    )
    for (name,) in rows:
        if name.endswith(SHADOW):
            await conn.execute(f"ALTER INDEX {name} RENAME TO {name.removesuffix(SHADOW)}")


async def rebuild(
    store: EventStore,
    projections: Projection | Sequence[Projection],
    *,
    page_size: int = 50_000,
    max_rows: int = MAX_ROWS,
    progress: Progress | None = None,
    before_swap: Hook | None = None,
) -> int:
    """Replay the log once into every projection's shadows while the live tables serve; swap.

    Returns the number of events read. Rows are folded in memory and written once, in
    bulk; a projection holding more than `max_rows` rows writes them out and loads back
    only those later events touch. The next page is fetched while the current one is
    folded, so PostgreSQL and Python work at the same time.
    """
    targets = [projections] if not isinstance(projections, Sequence) else list(projections)
    async with store.pool.acquire() as conn:
        for p in targets:
            await _prepare(conn, p)
        replays = [(p, p.replay()) for p in targets]
        position, seen, head = 0, 0, await store.head()
        with _collector_paused():
            fetch = asyncio.ensure_future(store.read_all(0, page_size))
            while page := await fetch:
                fetch = asyncio.ensure_future(store.read_all(page[-1].position, page_size))
                for p, replay in replays:
                    await replay.feed(conn, shadow_tables(p), decode(relevant(p, page)))
                    if replay.held > max_rows:
                        async with conn.transaction():
                            await replay.flush(conn, shadow_tables(p))
                position, seen = page[-1].position, seen + len(page)
                if progress is not None:
                    progress(position, max(head, position))
            for p, replay in replays:
                await _finish(conn, p, replay, position)
        if before_swap is not None:
            await before_swap()
        for p in targets:
            seen += await _catch_up_and_swap(conn, store, p, position, page_size)
        for p in targets:
            for table in p.tables:
                await conn.execute(f"DROP TABLE IF EXISTS {table}{RETIRED}")
    return seen


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause CPython's cyclic collector for the replay pass, then collect once.

    The pass allocates several container objects per event, none in a cycle, and holds a
    page of them at a time; the collector kept re-walking those pages and took about a
    quarter of a rebuild. Reference counting still frees everything as it goes.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()


async def _finish(
    conn: asyncpg.Connection, projection: Projection, replay: Replay, position: int
) -> None:
    """Write the replayed rows with the shadow checkpoint, then build the indexes."""
    async with conn.transaction():
        await replay.finish(conn, shadow_tables(projection))
        await conn.execute(
            "INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2)",
            _shadow_cp(projection),
            position,
        )
    await _build_indexes(conn, projection)


def _shadow_cp(projection: Projection) -> str:
    return f"{projection.name}{SHADOW}"


async def _catch_up_and_swap(
    conn: asyncpg.Connection,
    store: EventStore,
    projection: Projection,
    position: int,
    page_size: int,
) -> int:
    """Under the chunk lock (the live runner pauses between chunks): last events, then swap."""
    seen = 0
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", chunk_key(projection.name))
        while page := await store.read_all(position, page_size):
            shadows = shadow_tables(projection)
            position = await apply_chunk(
                conn, projection, shadows, page, checkpoint_name=_shadow_cp(projection)
            )
            seen += len(page)
        await conn.execute(
            "DELETE FROM projection_checkpoints WHERE name = $1", _shadow_cp(projection)
        )
        await _swap(conn, projection, position)
    return seen
