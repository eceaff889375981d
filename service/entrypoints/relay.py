"""The JetStream relay: the leader among `serve` instances publishes every event of the log,
in log order, and checkpoints the prefix JetStream acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import nats.errors

from eventstore import EventStore, RecordedEvent
from projections.base import leader_key
from service.adapters import relay_state
from service.adapters.jetstream import (
    Encoder,
    Link,
    RelayMisconfigured,
    RelayUnavailable,
    Stored,
    StreamSpec,
    Tail,
    where_of,
)
from service.adapters.relay_state import Checkpoint
from service.config import Settings
from service.entrypoints.relay_window import AckWindow, PublishFailed, Stopped
from service.logs import get_logger
from service.relay_health import RelayHealth

T = TypeVar("T")

FLUSH_SECONDS = 0.25  # how often the checkpoint is saved, and the lock checked, while busy
MAX_RETRY_SECONDS = 30.0
DRAIN_ON_STOP_SECONDS = 1.0  # acknowledgements in flight still counted when serve stops
PAGE_SIZE = 1000  # events a page; a queued request holds its transcript
# Messages read back from the stream at start; more than a window and a flush leave.
RECONCILE_LIMIT = 100_000


def relay_lock(stream: str) -> int:
    """The advisory lock held by the one relay feeding `stream` (and by `relay reset`)."""
    return leader_key(f"relay:{stream}")


@dataclass(frozen=True)
class RelayConfig:
    """The relay's settings."""

    url: str
    creds: str | None
    spec: StreamSpec
    inbox: str = "_INBOX"
    window: int = 1024
    ack_timeout: float = 10.0
    retry_seconds: float = 2.0
    page_size: int = PAGE_SIZE

    @classmethod
    def from_settings(cls, s: Settings) -> RelayConfig | None:
        """None when NATS_URL is not set (the relay is off)."""
        if s.nats_url is None:
            return None
        spec = StreamSpec(
            name=s.nats_stream,
            prefix=s.nats_subject_prefix,
            retention=s.nats_stream_retention,
            max_age_seconds=s.nats_stream_max_age_seconds,
            max_bytes=s.nats_stream_max_bytes,
            replicas=s.nats_stream_replicas,
            duplicate_window_seconds=s.nats_duplicate_window_seconds,
        )
        return cls(
            s.nats_url,
            s.nats_creds_file,
            spec,
            inbox=s.nats_inbox_prefix,
            window=s.relay_window,
            ack_timeout=s.relay_ack_timeout_seconds,
            retry_seconds=s.relay_retry_seconds,
        )


@dataclass
class Session:
    """One NATS connection's relaying: what it found in the stream and where it stands."""

    link: Link
    lost: asyncio.Future[Any]
    stopping: asyncio.Future[Any]
    window: AckWindow
    encoder: Encoder
    stored: dict[int, Stored]  # messages past the checkpoint the stream holds already


class Relay:
    """Follows the log from the checkpoint and publishes it while it holds the leader lock."""

    def __init__(self, store: EventStore, config: RelayConfig) -> None:
        self.store = store
        self.config = config
        self.health = RelayHealth(
            config.spec.name,
            where_of(config.url),
            functools.partial(relay_state.progress, store.pool, config.spec.name),
        )
        self.log = get_logger("relay").bind(stream=config.spec.name, nats=self.health.where)
        self.sessions = 0  # NATS sessions led, for tests and logs

    async def run(self, stop: asyncio.Event) -> None:
        """Wait for the leader lock, then relay until `stop` is set."""
        while not stop.is_set():
            leader: asyncpg.Connection | None = None
            try:
                # Named, so pg_stat_activity and pg_locks show which process leads.
                leader = await asyncpg.connect(
                    self.store.dsn,
                    server_settings={"application_name": f"batchledger-relay:{os.getpid()}"},
                )
                if await leader.fetchval(
                    "SELECT pg_try_advisory_lock($1)", relay_lock(self.config.spec.name)
                ):
                    self.health.role = "leader"
                    self.log.info("relay.leader")
                    await self._lead(stop, leader)
                else:
                    self.health.role = "standby"
            except Exception:  # a lost database connection: log, wait, start over
                self.log.exception("relay.failed", retry_in=self.config.retry_seconds)
            finally:
                if not stop.is_set():
                    self.health.role = "standby"
                if leader is not None:
                    with contextlib.suppress(Exception):
                        await leader.close()
            await _sleep(stop, self.config.retry_seconds)

    async def _lead(self, stop: asyncio.Event, leader: asyncpg.Connection) -> None:
        """NATS sessions one after another, backing off while nothing moves."""
        delay = self.config.retry_seconds
        while not stop.is_set():
            before = self.health.acked
            try:
                await self._session(stop, leader)
            except Stopped:
                return
            except RelayMisconfigured as exc:
                self._trouble("refused", exc, delay)
            except PublishFailed as exc:
                refused = exc.reason in ("rejected", "duplicate")
                self._trouble("refused" if refused else "unreachable", exc, delay)
            except (RelayUnavailable, nats.errors.Error, OSError) as exc:
                self._trouble("unreachable", exc, delay)
            if stop.is_set():
                return
            moved = self.health.acked > before
            delay = self.config.retry_seconds if moved else min(delay * 2, MAX_RETRY_SECONDS)
            await _sleep(stop, delay)
            await leader.fetchval("SELECT 1")  # still the leader? (raises when the lock is gone)

    def _trouble(self, state: str, exc: BaseException, retry_in: float) -> None:
        self.health.nats, self.health.error = state, str(exc)
        if isinstance(exc, PublishFailed):
            self.health.failed(exc.reason)
        elif self.health.acked and not isinstance(exc, RelayMisconfigured):
            self.health.failed("connection")
        self.log.warning("relay.interrupted", nats=state, reason=str(exc), retry_in=retry_in)

    async def _session(self, stop: asyncio.Event, leader: asyncpg.Connection) -> None:
        """Connect, check the stream, and relay until stopped or interrupted."""
        c = self.config
        link = await _unless(
            stop,
            Link.open(
                c.url,
                creds=c.creds,
                window=c.window,
                wait=c.ack_timeout,
                where=self.health.where,
                inbox=c.inbox,
            ),
        )
        lost = asyncio.ensure_future(link.lost.wait())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await _unless(stop, link.ensure_stream(c.spec))
            self.health.nats, self.health.error = "connected", None
            self.sessions += 1
            s = await _unless(stop, self._start(link, lost, stopping))
            try:
                await self._follow(stop, leader, s)
            except PublishFailed as exc:  # unanswered because the server refused the subject?
                raise link.refused() or exc from None
            finally:
                await self._end(stop, s)
        finally:
            lost.cancel()
            stopping.cancel()
            await link.close()

    async def _start(
        self, link: Link, lost: asyncio.Future[Any], stopping: asyncio.Future[Any]
    ) -> Session:
        """The checkpoint, and what the stream holds past it (stored before a crash)."""
        name = self.config.spec.name
        at = await relay_state.load(self.store.pool, name)
        tail = await link.tail(name, at.stream_sequence, RECONCILE_LIMIT)
        if tail.last_seq < at.stream_sequence:
            raise RelayMisconfigured(
                f"stream {name} ends at sequence {tail.last_seq}, before the checkpoint's"
                f" {at.stream_sequence} (event {at.position}): it was deleted or recreated."
                " Publishing on would leave events out; `batchledger relay reset --to 0`"
                " publishes the whole log into it again, in order"
            )
        found = _contiguous(name, at, tail)
        if found:
            self.log.info("relay.found_unrecorded", checkpoint=at.position, messages=len(found))
        encoder = Encoder(self.config.spec.prefix, link.max_payload, name)
        encoder.expect(tail.last_seq)
        window = AckWindow(at, self.config.window, floor=tail.last_seq)
        return Session(link, lost, stopping, window, encoder, found)

    async def _follow(self, stop: asyncio.Event, leader: asyncpg.Connection, s: Session) -> None:
        loop = asyncio.get_running_loop()
        saved, next_save = s.window.acked, loop.time()
        sub = self.store.subscribe(s.window.acked.position, page_size=self.config.page_size)
        async with sub:
            # One read at a time, never abandoned: a slow page is waited for, not read
            # again; meanwhile PostgreSQL reads the next page while this one is published.
            reading = asyncio.ensure_future(sub.next_page())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                while not stop.is_set():
                    if s.lost.done():
                        raise RelayUnavailable(f"the connection to NATS at {s.link.where} was lost")
                    await asyncio.wait(
                        {reading, stopping}, timeout=FLUSH_SECONDS, return_when="FIRST_COMPLETED"
                    )
                    if reading.done():
                        page, reading = reading.result(), asyncio.ensure_future(sub.next_page())
                        await self._publish(page, s)
                    else:  # idle: every acknowledgement in, so the checkpoint reaches the head
                        await self._drain(s)
                    if s.window.acked != saved and loop.time() >= next_save:
                        await relay_state.save(
                            self.store.pool, self.config.spec.name, s.window.acked
                        )
                        saved, next_save = s.window.acked, loop.time() + FLUSH_SECONDS
                        # The lock dies with this connection: an instance that lost it stops
                        # within a flush, well inside the duplicate window.
                        await leader.fetchval("SELECT 1")
            finally:
                for task in (reading, stopping):
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await reading

    async def _publish(self, page: list[RecordedEvent], s: Session) -> None:
        timeout = self.config.ack_timeout
        for event in page:
            while s.window.full:
                await s.window.wait_oldest(timeout, s.lost, s.stopping)
                s.window.settle()
            if s.stored and (held := s.stored.pop(event.position, None)) is not None:
                if held.msg_id and held.msg_id != str(event.id):
                    raise RelayMisconfigured(_not_ours(self.config.spec.name, event, held))
                s.window.stored(event.position, held.sequence)
            else:
                s.window.sent(event.position, await s.link.publish(s.encoder.message(event)))
        self.health.acked = s.window.settle().position

    async def _drain(self, s: Session, *, stoppable: bool = True) -> None:
        while len(s.window):
            stopping = s.stopping if stoppable else None
            await s.window.wait_oldest(self.config.ack_timeout, s.lost, stopping)
            self.health.acked = s.window.settle().position

    async def _save(self, at: Checkpoint) -> None:
        await relay_state.save(self.store.pool, self.config.spec.name, at)

    async def _end(self, stop: asyncio.Event, s: Session) -> None:
        """Count what was acknowledged (briefly waiting on a clean stop) and save it."""
        if stop.is_set() and not s.lost.done():
            with contextlib.suppress(PublishFailed, TimeoutError):
                await asyncio.wait_for(self._drain(s, stoppable=False), DRAIN_ON_STOP_SECONDS)
        with contextlib.suppress(PublishFailed):
            s.window.settle()
        s.window.abandon()
        await self._save(s.window.acked)
        self.health.acked = s.window.acked.position


def _contiguous(stream: str, at: Checkpoint, tail: Tail) -> dict[int, Stored]:
    """The messages stored past the checkpoint, by position; a gap in them is refused."""
    found: dict[int, Stored] = {}
    # Messages past the checkpoint that the stream's limits removed since were stored (no
    # message follows one JetStream did not store): they are not sent again.
    for offset in range(1, max(tail.first_seq - 1 - at.stream_sequence, 0) + 1):
        found[at.position + offset] = Stored(at.position + offset, "", at.stream_sequence + offset)
    expected = at.position + len(found) + 1
    for m in tail.messages:
        if m.position < expected:
            continue  # an older leader's overlap stored twice: counted once
        if m.position != expected:
            raise RelayMisconfigured(
                f"stream {stream} holds event {m.position} right after event {expected - 1}:"
                f" event {expected} is missing, and publishing it now would put it out of"
                " order; delete the stream and `batchledger relay reset`"
            )
        found[m.position] = m
        expected += 1
    return found


def _not_ours(stream: str, event: RecordedEvent, held: Stored) -> str:
    return (
        f"stream {stream} holds another event at position {event.position} (id {held.msg_id},"
        f" the log's is {event.id}): the database was restored from an older backup, or"
        " another database feeds this stream. Delete the stream and run"
        " `batchledger relay reset`"
    )


async def _unless(stop: asyncio.Event, step: Awaitable[T]) -> T:
    """`step`'s result, or Stopped (and `step` cancelled) when `stop` is set first."""
    doing = asyncio.ensure_future(step)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({doing, stopping}, return_when="FIRST_COMPLETED")
    finally:
        stopping.cancel()
    if not doing.done():
        doing.cancel()
        with contextlib.suppress(BaseException):
            await doing
        raise Stopped
    return doing.result()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
