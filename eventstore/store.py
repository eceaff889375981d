"""The PostgreSQL event store: atomic multi-stream append under a writer lock, and reads."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from eventstore.errors import ConcurrencyError, DuplicateEventError, StreamConflict, WriterBusy
from eventstore.listener import NOTIFY_CHANNEL, Listener
from eventstore.model import EventMetadata, NewEvent, RecordedEvent, StreamAppend
from eventstore.port import WriterLockStats
from eventstore.tail import Tail

if TYPE_CHECKING:
    from eventstore.subscription import Subscription

# Every append takes this transaction-scoped advisory lock before it allocates
# positions, so positions commit in ascending order and a reader can never see
# position N+1 before N (DESIGN §3.3; docs/architecture.md explains why).
WRITER_LOCK_KEY = 0x6261_7463_686C_6F67  # "batchlog"
# How long an append waits for the writer lock before it gives up with WriterBusy: a
# stuck writer transaction must not freeze every writer silently. Appends hold the lock
# for milliseconds; the largest, a batch plan of 50,000 requests, for a second or two.
WRITER_LOCK_TIMEOUT = 5.0
_COPY_THRESHOLD = 256  # below this many events a multi-row INSERT beats COPY's extra round trips
_COLUMNS = (
    "position",
    "stream_id",
    "stream_version",
    "event_id",
    "event_type",
    "data",
    "metadata",
    "scope",
)
# jsonb comes back as text: asyncpg decodes text in C, twice as fast as a Python codec.
_SELECT = (
    "SELECT position, stream_id, stream_version, event_id, event_type, data::text,"
    " metadata::text, recorded_at, scope FROM events"
)
# The newest events kept in memory for live subscriptions: at most this many, and at most
# this much event data (queued requests carry their transcripts).
TAIL_CAPACITY = 10_000
TAIL_MAX_BYTES = 32 * 1024 * 1024
_CONFLICT_SQLSTATE = "BL409"
_EVENT_ID_KEY = "events_event_id_key"

_encode = msgspec.json.Encoder().encode
_decode_metadata = msgspec.json.Decoder(EventMetadata).decode


async def init_connection(conn: asyncpg.Connection) -> None:
    """Send jsonb as msgspec-encoded bytes (binary COPY needs it; reads cast to text)."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda b: b"\x01" + b,
        decoder=lambda b: b[1:].decode(),
        format="binary",
    )


def _to_event(row: asyncpg.Record) -> RecordedEvent:
    return RecordedEvent(
        position=row[0],
        stream_id=row[1],
        version=row[2],
        id=row[3],
        type=row[4],
        data=row[5],
        metadata=_decode_metadata(row[6]),
        recorded_at=row[7],
        scope=row[8],
    )


class EventStore:
    """Append to and read from the `events` table through an asyncpg pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        *,
        writer_lock_key: int = WRITER_LOCK_KEY,
        writer_lock_timeout: float = WRITER_LOCK_TIMEOUT,
        tail_capacity: int = TAIL_CAPACITY,
        tail_max_bytes: int = TAIL_MAX_BYTES,
    ):
        if not (writer_lock_timeout > 0 and math.isfinite(writer_lock_timeout)):
            raise ValueError(
                f"writer_lock_timeout must be seconds above 0, got {writer_lock_timeout!r}"
            )
        self.pool = pool
        self.dsn = dsn
        self.writer_lock_key = writer_lock_key
        self.writer_lock_timeout = writer_lock_timeout
        # lock_timeout counts whole milliseconds and 0 would mean "wait forever".
        self._lock_timeout = f"{min(max(round(writer_lock_timeout * 1000), 1), 2**31 - 1)}ms"
        self.writer_lock = WriterLockStats()
        self._notifier = Notifier(pool)
        self.listener = Listener(dsn)
        self.tail = Tail(self, capacity=tail_capacity, max_bytes=tail_max_bytes)

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        writer_lock_timeout: float = WRITER_LOCK_TIMEOUT,
        tail_capacity: int = TAIL_CAPACITY,
        tail_max_bytes: int = TAIL_MAX_BYTES,
    ) -> EventStore:
        """Create a pool on `dsn` with the codecs the store needs."""
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=init_connection
        )
        return cls(
            pool,
            dsn,
            writer_lock_timeout=writer_lock_timeout,
            tail_capacity=tail_capacity,
            tail_max_bytes=tail_max_bytes,
        )

    async def close(self) -> None:
        """Stop the notifier and the listener, and close the pool."""
        await self._notifier.close()
        await self.tail.close()
        await self.listener.close()
        await self.pool.close()

    async def append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        *,
        scope: str | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> int:
        """Append events to one stream; returns the position of the last one."""
        if conn is None and len(events) < _COPY_THRESHOLD:
            return await self._append_one_round_trip(stream_id, expected_version, events, scope)
        return await self.append_many(
            [StreamAppend(stream_id, expected_version, list(events), scope)], conn=conn
        )

    async def append_many(
        self, appends: Sequence[StreamAppend], *, conn: asyncpg.Connection | None = None
    ) -> int:
        """Append to many streams in one transaction: all or nothing; returns the last position."""
        if conn is not None:
            # The caller commits: a NOTIFY queued in its transaction is sent exactly then.
            last = await self._append_in(conn, appends)
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(last))
            return last
        async with self.pool.acquire() as own:
            last = await self._append_in(own, appends)
        self._notifier.poke()
        return last

    async def _append_in(self, conn: asyncpg.Connection, appends: Sequence[StreamAppend]) -> int:
        # A nested call becomes a savepoint, so the duplicate lookup below still works
        # inside a caller's transaction.
        try:
            async with conn.transaction():
                return await self._append_locked(conn, appends)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != _EVENT_ID_KEY:
                raise
            raise await self._duplicate_error(conn, appends) from exc

    async def _append_one_round_trip(
        self, stream_id: str, expected: int | None, events: Sequence[NewEvent], scope: str | None
    ) -> int:
        args = (
            stream_id,
            expected,
            [e.id for e in events],
            [e.type for e in events],
            [e.data for e in events],
            [_encode(e.metadata) for e in events],
            self.writer_lock_key,
            scope,
        )
        async with self.pool.acquire() as conn:
            try:
                position: int | None = await conn.fetchval(_APPEND_IF_FREE, *args)
                if position is None:  # another transaction holds the writer lock: nothing done
                    row = await self._wait_for_lock(conn, _APPEND_AFTER_WAIT, *args)
                    position = row[0]
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != _EVENT_ID_KEY:
                    raise
                appended = [StreamAppend(stream_id, expected, list(events), scope)]
                raise await self._duplicate_error(conn, appended) from exc
            except asyncpg.PostgresError as exc:
                if exc.sqlstate != _CONFLICT_SQLSTATE:
                    raise
                sid, exp, actual = str(exc.args[0]).rsplit("|", 2)
                raise ConcurrencyError([StreamConflict(sid, int(exp), int(actual))]) from exc
        self._notifier.poke()
        return position

    async def _wait_for_lock(
        self, conn: asyncpg.Connection, sql: str, *args: Any
    ) -> asyncpg.Record:
        """Run a `_waiting_for_lock` statement, count its wait; WriterBusy when it timed out."""
        # The timeout goes last: $2 of _WAIT_FOR_LOCK, $9 of _APPEND_AFTER_WAIT.
        started = time.perf_counter()
        try:
            row: asyncpg.Record = await conn.fetchrow(sql, *args, self._lock_timeout)
        except asyncpg.LockNotAvailableError as exc:
            self.writer_lock.record(time.perf_counter() - started, timed_out=True)
            raise WriterBusy(self.writer_lock_timeout) from exc
        except BaseException:
            # A conflict or a duplicate found once the lock was free: the wait still happened.
            self.writer_lock.record(time.perf_counter() - started)
            raise
        self.writer_lock.record(row[-1])
        return row

    async def _append_locked(
        self, conn: asyncpg.Connection, appends: Sequence[StreamAppend]
    ) -> int:
        # Free, the common case: one round trip, as a plain lock. Taken: wait, bounded.
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self.writer_lock_key):
            await self._wait_for_lock(conn, _WAIT_FOR_LOCK, self.writer_lock_key)
        current = await self._versions(conn, [a.stream_id for a in appends])
        conflicts = [
            StreamConflict(a.stream_id, a.expected_version, current[a.stream_id])
            for a in appends
            if a.expected_version is not None and a.expected_version != current[a.stream_id]
        ]
        if conflicts:
            raise ConcurrencyError(conflicts)
        head: int = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
        count = sum(len(a.events) for a in appends)
        rows = _rows(appends, current, head)
        if count < _COPY_THRESHOLD:
            if count:
                await conn.execute(_INSERT_UNNEST, *zip(*rows, strict=True))
        else:
            # A generator: rows are built while asyncpg streams earlier ones, so Python
            # builds the next rows while PostgreSQL inserts and indexes the last.
            await conn.copy_records_to_table("events", records=rows, columns=_COLUMNS)
        return head + count

    @staticmethod
    async def _versions(conn: asyncpg.Connection, stream_ids: list[str]) -> dict[str, int]:
        rows = await conn.fetch(
            "SELECT s.id, (SELECT coalesce(max(e.stream_version), 0) FROM events e"
            " WHERE e.stream_id = s.id) FROM unnest($1::text[]) AS s(id)",
            stream_ids,
        )
        return {r[0]: r[1] for r in rows}

    async def _duplicate_error(
        self, conn: asyncpg.Connection, appends: Sequence[StreamAppend]
    ) -> DuplicateEventError:
        ids = [e.id for a in appends for e in a.events]
        rows = await conn.fetch("SELECT event_id FROM events WHERE event_id = ANY($1::uuid[])", ids)
        stored = {r[0] for r in rows}
        if not stored:  # the same id twice inside this one append
            stored = {i for i, n in Counter(ids).items() if n > 1}
        return DuplicateEventError(sorted(stored))

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Events of one stream in version order, after `after_version`."""
        rows = await self.pool.fetch(
            f"{_SELECT} WHERE stream_id = $1 AND stream_version > $2"
            " ORDER BY stream_version LIMIT $3",
            stream_id,
            after_version,
            limit,
        )
        return [_to_event(r) for r in rows]

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """Every event of many streams in one query, each stream in version order."""
        rows = await self.pool.fetch(
            f"{_SELECT} WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, stream_version",
            list(stream_ids),
        )
        out: dict[str, list[RecordedEvent]] = {sid: [] for sid in stream_ids}
        for r in rows:
            out[r[1]].append(_to_event(r))
        return out

    async def read_all(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        types: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        scopes: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """A page of the global log after position `after`, optionally filtered.

        `scopes`, when given, limits the page to events of those scopes (an empty list: none).
        """
        where, args = _filters(after, types, categories)
        if scopes is None:
            sql = f"{_SELECT} WHERE {where} ORDER BY position LIMIT ${len(args) + 1}"
            rows = await self.pool.fetch(sql, *args, limit)
        else:
            rows = await self.pool.fetch(_scoped(where, len(args)), *args, limit, list(scopes))
        return [_to_event(r) for r in rows]

    async def head(self, *, scopes: Sequence[str] | None = None) -> int:
        """The position of the last committed event (0 when the log is empty); with `scopes`,
        the last of those scopes (one index probe per scope)."""
        if scopes is None:
            value: int = await self.pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
            return value
        scoped: int = await self.pool.fetchval(
            "SELECT coalesce(max(e.position), 0) FROM unnest($1::text[]) AS s(scope)"
            " CROSS JOIN LATERAL (SELECT position FROM events WHERE scope = s.scope"
            " ORDER BY position DESC LIMIT 1) AS e",
            list(scopes),
        )
        return scoped

    async def stream_version(self, stream_id: str) -> int:
        """The version of a stream (0 when it has no events)."""
        async with self.pool.acquire() as conn:
            return (await self._versions(conn, [stream_id]))[stream_id]

    async def stream_versions(self, stream_ids: Sequence[str]) -> dict[str, int]:
        """Versions of many streams in one query."""
        async with self.pool.acquire() as conn:
            return await self._versions(conn, list(stream_ids))

    def subscribe(
        self,
        after: int = 0,
        *,
        types: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        scopes: Sequence[str] | None = None,
        page_size: int = 1000,
        poll_interval: float = 1.0,
    ) -> Subscription:
        """Catch up from `after`, then follow the log live (LISTEN/NOTIFY plus polling)."""
        from eventstore.subscription import Subscription

        return Subscription(
            self,
            after,
            types=types,
            categories=categories,
            scopes=scopes,
            page_size=page_size,
            poll_interval=poll_interval,
        )


class Notifier:
    """Wakes subscribers after commits: one NOTIFY at a time, coalescing appends meanwhile.

    NOTIFY is only a wake-up; subscribers read by position and also poll, so a wake-up
    lost to a crash between commit and notify delays delivery by one poll interval.
    """

    def __init__(self, pool: asyncpg.Pool, min_interval: float = 0.005) -> None:
        self._pool = pool
        self._min_interval = min_interval  # bounds NOTIFY cost under a stream of small appends
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        """Ask for a NOTIFY soon."""
        self._dirty.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._dirty.is_set():
            self._dirty.clear()
            try:
                await self._pool.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                return  # subscribers still poll; the next append tries again
            await asyncio.sleep(self._min_interval)

    async def close(self) -> None:
        """Let a pending NOTIFY finish."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task


def _waiting_for_lock(key: str, timeout: str) -> str:
    """CTEs that take the writer lock waiting at most `timeout`; `restored.waited` in seconds."""
    # Each MATERIALIZED CTE runs on the row of the one before, so they run in this order.
    # lock_timeout is set around the lock alone, then restored: the append's own
    # statements after it, and a caller's transaction the append joins, keep the session's
    # value, and set_config(..., true) ends with the transaction anyway, so no pooled
    # connection keeps it. The server times the wait: the figure holds no round trip.
    return (
        "WITH session AS MATERIALIZED (SELECT current_setting('lock_timeout') AS timeout),"
        " bounded AS MATERIALIZED"
        f" (SELECT timeout, set_config('lock_timeout', {timeout}, true) FROM session),"
        f" locked AS MATERIALIZED (SELECT timeout, pg_advisory_xact_lock({key}) FROM bounded),"
        " restored AS MATERIALIZED (SELECT set_config('lock_timeout', timeout, true),"
        " extract(epoch FROM clock_timestamp() - statement_timestamp())::float8 AS waited"
        " FROM locked)"
    )


# The lock alone, inside an append's transaction: $1 the key, $2 the timeout.
_WAIT_FOR_LOCK = _waiting_for_lock("$1", "$2") + " SELECT waited FROM restored"
_APPEND_ARGS = "$1, $2, $3, $4, $5, $6, $7, $8"  # $7 is the writer lock key
# The one-round-trip append when the lock is free; NULL, having done nothing, when it is
# taken. The normal path so costs no extra round trip and sets nothing.
_APPEND_IF_FREE = (
    f"SELECT CASE WHEN pg_try_advisory_xact_lock($7) THEN eventstore_append({_APPEND_ARGS}) END"
)
# The same append after a bounded wait ($9 the timeout); eventstore_append's own
# pg_advisory_xact_lock then finds the lock already held by this transaction.
_APPEND_AFTER_WAIT = (
    _waiting_for_lock("$7", "$9")
    + f" SELECT eventstore_append({_APPEND_ARGS}), waited FROM restored"
)

_INSERT_UNNEST = (
    "INSERT INTO events (position, stream_id, stream_version, event_id, event_type, data,"
    " metadata, scope)"
    " SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::uuid[], $5::text[],"
    " $6::jsonb[], $7::jsonb[], $8::text[])"
)


def _rows(
    appends: Sequence[StreamAppend], current: dict[str, int], head: int
) -> Iterator[tuple[int, str, int, uuid.UUID, str, bytes, bytes, str | None]]:
    position = head
    versions = dict(current)
    for a in appends:
        version, scope = versions[a.stream_id], a.scope
        for e in a.events:
            position += 1
            version += 1
            yield position, a.stream_id, version, e.id, e.type, e.data, _encode(e.metadata), scope
        versions[a.stream_id] = version


def _scoped(where: str, n: int) -> str:
    """One index range per scope, each cut at the limit, merged by position.

    `(scope, position)` orders each scope's events; `scope = ANY(...)` over several
    scopes would have to sort all their events after `after` before the first row.
    """
    return (
        f"SELECT e.* FROM unnest(${n + 2}::text[]) AS s(scope) CROSS JOIN LATERAL ("
        f"{_SELECT} WHERE scope = s.scope AND {where} ORDER BY position LIMIT ${n + 1}) AS e"
        f" ORDER BY e.position LIMIT ${n + 1}"
    )


def _filters(
    after: int, types: Sequence[str] | None, categories: Sequence[str] | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = ["position > $1"]
    args: list[Any] = [after]
    if types:
        args.append(list(types))
        clauses.append(f"event_type = ANY(${len(args)}::text[])")
    if categories:
        args.append(list(categories))
        clauses.append(f"split_part(stream_id, '-', 1) = ANY(${len(args)}::text[])")
    return " AND ".join(clauses), args
