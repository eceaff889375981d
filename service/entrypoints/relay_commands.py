"""`batchledger relay status|reset`: the relay's checkpoint against the log and the stream."""

from __future__ import annotations

import sys

import asyncpg
import nats.js.errors

from eventstore import EventStore
from service.adapters import relay_state
from service.adapters.database import migrate
from service.adapters.jetstream import Link, RelayMisconfigured, RelayUnavailable, where_of
from service.adapters.relay_state import Checkpoint
from service.config import Settings
from service.entrypoints.relay import relay_lock


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
        link = await _open(settings.nats_url, settings)
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
    """Move the checkpoint to `to`, found in the stream, while no relay runs."""
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        head = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        if not 0 <= to <= head:
            print(f"--to {to} is outside the log (0..{head})", file=sys.stderr)
            return 2
        # Holding the relay's lock keeps a leader from starting meanwhile, and a running
        # leader would save its own position over the reset.
        if not await conn.fetchval(
            "SELECT pg_try_advisory_lock($1)", relay_lock(settings.nats_stream)
        ):
            print(
                f"a relay is running for {settings.nats_stream}: stop it first (stop serve,"
                " or run it with --no-relay), then reset",
                file=sys.stderr,
            )
            return 1
        sequence = await _sequence_of(settings, to)
        await relay_state.reset(conn, settings.nats_stream, Checkpoint(to, sequence))
    except RelayUnavailable as exc:
        print(f"{exc}; the reset needs the stream to find position {to} in it", file=sys.stderr)
        return 1
    except RelayMisconfigured as exc:
        print(f"not reset: {exc}", file=sys.stderr)
        return 1
    finally:
        await conn.close()
    print(
        f"relay checkpoint of {settings.nats_stream} set to position {to} (JetStream sequence"
        f" {sequence}); the next leader publishes from there"
    )
    return 0


async def _sequence_of(settings: Settings, position: int) -> int:
    """The stream sequence of the last message at or before `position` (0: none there)."""
    if settings.nats_url is None:
        if position == 0:
            return 0  # from the start, into whatever stream the relay finds
        raise RelayUnavailable("NATS_URL is not set")
    link = await _open(settings.nats_url, settings)
    try:
        return await link.resume_sequence(settings.nats_stream, position)
    except nats.js.errors.NotFoundError:
        return 0  # no stream yet: it is created, and filled from `position`, at start
    finally:
        await link.close()


async def _open(url: str, settings: Settings) -> Link:
    """A short-lived connection for a command."""
    return await Link.open(
        url,
        creds=settings.nats_creds_file,
        window=1,
        wait=5.0,
        where=where_of(url),
        inbox=settings.nats_inbox_prefix,
    )
