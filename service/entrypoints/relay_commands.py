"""`batchledger relay status|reset`: the relay's checkpoint against the log and the stream."""

from __future__ import annotations

from eventstore import EventStore
from service.adapters import relay_state
from service.adapters.database import migrate
from service.adapters.jetstream import Link, RelayMisconfigured, RelayUnavailable, where_of
from service.config import Settings


async def status_command(dsn: str, settings: Settings) -> int:
    """Print the checkpoint, the head, the lag and (with NATS_URL) what the stream holds."""
    await migrate(dsn)
    store = await EventStore.open(dsn, max_size=2)
    try:
        at = await relay_state.progress(store.pool, settings.nats_stream)
    finally:
        await store.close()
    saved = at.updated_at.isoformat() if at.updated_at else "never"
    print(f"stream      {at.stream}")
    print(f"checkpoint  {at.position} (JetStream sequence {at.stream_sequence}, saved {saved})")
    print(f"head        {at.head}")
    print(f"lag         {at.lag_events} events, {at.lag_seconds:.1f} s")
    print(f"jetstream   {await _stream_line(settings)}")
    return 0


async def _stream_line(settings: Settings) -> str:
    if settings.nats_url is None:
        return "NATS_URL is not set: the relay is off"
    where = where_of(settings.nats_url)
    try:
        link = await Link.open(
            settings.nats_url, creds=settings.nats_creds_file, window=1, wait=5.0, where=where
        )
    except RelayUnavailable as exc:
        return str(exc)
    try:
        info = await link.js.stream_info(settings.nats_stream)
        return (
            f"{where}: {info.state.messages} messages, sequences {info.state.first_seq}"
            f"..{info.state.last_seq}, {info.state.bytes:,} bytes"
        )
    except Exception as exc:  # not found, JetStream off, refused: say so, the checkpoint stands
        problem = link.refused() or RelayMisconfigured(f"{type(exc).__name__}: {exc}")
        return f"{where}: stream {settings.nats_stream} not readable ({problem})"
    finally:
        await link.close()


async def reset_command(dsn: str, settings: Settings, to: int) -> int:
    """Move the checkpoint to `to` (0: publish the whole log again); the stream is read
    back at start, so events it still holds are not published twice."""
    await migrate(dsn)
    store = await EventStore.open(dsn, max_size=2)
    try:
        head = await store.head()
        if to > head:
            print(f"position {to} is past the head of the log ({head})")
            return 2
        await store.pool.execute(
            "INSERT INTO relay_checkpoints (stream, position, stream_sequence) VALUES ($1, $2, 0)"
            " ON CONFLICT (stream) DO UPDATE SET position = $2, stream_sequence = 0,"
            " updated_at = now()",
            settings.nats_stream,
            to,
        )
    finally:
        await store.close()
    print(f"relay checkpoint of {settings.nats_stream} set to {to}; the leader resumes from it")
    return 0
