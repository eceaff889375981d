"""The relay's checkpoint in PostgreSQL: how far the log has reached JetStream."""

from __future__ import annotations

import asyncpg
import msgspec

from service.relay_health import RelayProgress


class Checkpoint(msgspec.Struct, frozen=True):
    """The last event of the acknowledged prefix and its message's JetStream sequence."""

    position: int = 0
    stream_sequence: int = 0


async def load(conn: asyncpg.Connection | asyncpg.Pool, stream: str) -> Checkpoint:
    """The stream's checkpoint (zeros before its first save)."""
    row = await conn.fetchrow(
        "SELECT position, stream_sequence FROM relay_checkpoints WHERE stream = $1", stream
    )
    return Checkpoint(row["position"], row["stream_sequence"]) if row else Checkpoint()


async def save(conn: asyncpg.Connection | asyncpg.Pool, stream: str, at: Checkpoint) -> None:
    """Move the checkpoint forward (never back: an old leader finishing late cannot undo)."""
    await conn.execute(
        "INSERT INTO relay_checkpoints AS c (stream, position, stream_sequence)"
        " VALUES ($1, $2, $3) ON CONFLICT (stream) DO UPDATE"
        " SET position = excluded.position, stream_sequence = excluded.stream_sequence,"
        " updated_at = now() WHERE c.position < excluded.position",
        stream,
        at.position,
        at.stream_sequence,
    )


async def progress(pool: asyncpg.Pool, stream: str) -> RelayProgress:
    """The checkpoint, the head, and how far and how long ago the relay is behind."""
    row = await pool.fetchrow(
        "SELECT c.position, c.stream_sequence, c.updated_at,"
        " (SELECT coalesce(max(position), 0) FROM events) AS head,"
        " (SELECT extract(epoch FROM clock_timestamp() - e.recorded_at) FROM events e"
        "   WHERE e.position = coalesce(c.position, 0) + 1) AS behind"
        " FROM (SELECT $1::text AS stream) s"
        " LEFT JOIN relay_checkpoints c ON c.stream = s.stream",
        stream,
    )
    position = int(row["position"] or 0)
    return RelayProgress(
        stream=stream,
        position=position,
        stream_sequence=int(row["stream_sequence"] or 0),
        head=int(row["head"]),
        lag_events=max(int(row["head"]) - position, 0),
        lag_seconds=max(float(row["behind"] or 0.0), 0.0),
        updated_at=row["updated_at"],
    )


async def reset(conn: asyncpg.Connection | asyncpg.Pool, stream: str, at: Checkpoint) -> None:
    """Set the checkpoint to `at`, backwards too (`batchledger relay reset`)."""
    await conn.execute(
        "INSERT INTO relay_checkpoints (stream, position, stream_sequence) VALUES ($1, $2, $3)"
        " ON CONFLICT (stream) DO UPDATE SET position = $2, stream_sequence = $3,"
        " updated_at = now()",
        stream,
        at.position,
        at.stream_sequence,
    )
