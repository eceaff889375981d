"""The JetStream relay: the leader among `serve` instances publishes every event of the log,
in log order, and checkpoints the prefix JetStream acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from dataclasses import dataclass
from typing import Any

import asyncpg
import nats.errors
import nats.js.errors
from nats.js import api

from eventstore import EventStore, RecordedEvent
from projections.base import leader_key
from service.adapters import relay_state
from service.adapters.jetstream import (
    Encoder,
    Link,
    RelayMisconfigured,
    RelayUnavailable,
    StreamSpec,
    where_of,
)
from service.adapters.relay_state import Checkpoint
from service.config import Settings
from service.logs import get_logger
from service.relay_health import RelayHealth

FLUSH_SECONDS = 0.25  # how often the checkpoint is saved while events flow
LEADER_CHECK_SECONDS = 5.0
MAX_RETRY_SECONDS = 30.0
# Messages read back from the stream at start, to publish nothing twice that was
# acknowledged but not yet checkpointed; more than a window and a flush ever leave.
RECONCILE_LIMIT = 200_000


class PublishFailed(Exception):
    """A message was not acknowledged: the session ends and resumes from the checkpoint."""

    def __init__(self, position: int, reason: str, detail: str) -> None:
        super().__init__(f"event {position} was not stored ({reason}): {detail}")
        self.position, self.reason = position, reason


@dataclass(frozen=True)
class RelayConfig:
    """The relay's settings."""

    url: str
    creds: str | None
    spec: StreamSpec
    window: int = 1024
    ack_timeout: float = 10.0
    retry_seconds: float = 2.0
    page_size: int = 5000

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
            window=s.relay_window,
            ack_timeout=s.relay_ack_timeout_seconds,
            retry_seconds=s.relay_retry_seconds,
        )


class AckWindow:
    """Messages sent and not yet settled, oldest first; `acked` is the last of the contiguous
    prefix JetStream stored, the only position the checkpoint may move to."""

    def __init__(self, at: Checkpoint, size: int) -> None:
        self.acked = at
        self.size = size
        self._pending: deque[tuple[int, asyncio.Future[api.PubAck] | int]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        """No more may be sent until the oldest is settled."""
        return len(self._pending) >= self.size

    def sent(self, position: int, ack: asyncio.Future[api.PubAck]) -> None:
        """A message is on its way."""
        self._pending.append((position, ack))

    def stored(self, position: int, sequence: int) -> None:
        """A message the stream already holds (found at start), settled as it is."""
        self._pending.append((position, sequence))

    def settle(self) -> Checkpoint:
        """Move `acked` over every settled message at the front; raise on a refused one."""
        while self._pending:
            position, ack = self._pending[0]
            if isinstance(ack, int):
                sequence = ack
            elif not ack.done():
                break
            elif (exc := ack.exception()) is not None:
                raise PublishFailed(position, "rejected", _describe(exc))
            else:
                sequence = ack.result().seq
            self._pending.popleft()
            self.acked = Checkpoint(position, sequence)
        return self.acked

    async def wait_oldest(self, within: float, lost: asyncio.Future[Any]) -> None:
        """Wait until the oldest message is settled; PublishFailed if it is not in time."""
        position, ack = self._pending[0]
        if isinstance(ack, int) or ack.done():
            return
        done, _ = await asyncio.wait({ack, lost}, timeout=within, return_when="FIRST_COMPLETED")
        if ack not in done:
            reason = "connection" if lost.done() else "timeout"
            raise PublishFailed(position, reason, f"no acknowledgement within {within:g}s")

    def abandon(self) -> None:
        """Forget what is in flight (it is sent again from the checkpoint)."""
        for _, ack in self._pending:
            if not isinstance(ack, int):
                ack.cancel()
        self._pending.clear()


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
                leader = await asyncpg.connect(self.store.dsn)
                key = leader_key(f"relay:{self.config.spec.name}")
                if await leader.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    self.health.role = "leader"
                    self.log.info("relay.leader")
                    await self._lead(stop, leader)
                else:
                    self.health.role = "standby"
            except Exception:  # a lost database connection: log, wait, start over
                self.log.exception("relay.failed", retry_in=self.config.retry_seconds)
            finally:
                self.health.role = "standby" if not stop.is_set() else self.health.role
                if leader is not None:
                    with contextlib.suppress(Exception):
                        await leader.close()
            await _sleep(stop, self.config.retry_seconds)

    async def _lead(self, stop: asyncio.Event, leader: asyncpg.Connection) -> None:
        """Open NATS sessions one after another, backing off while NATS is down or refuses."""
        delay = self.config.retry_seconds
        while not stop.is_set():
            try:
                moved = await self._session(stop, leader)
            except (RelayUnavailable, PublishFailed, nats.errors.Error, OSError) as exc:
                self._trouble("unreachable", exc, delay)
                moved = isinstance(exc, PublishFailed)
            except RelayMisconfigured as exc:
                self._trouble("refused", exc, delay)
                moved = False
            if stop.is_set():
                return
            delay = self.config.retry_seconds if moved else min(delay * 2, MAX_RETRY_SECONDS)
            await _sleep(stop, delay)
            await leader.fetchval("SELECT 1")  # still the leader? (raises when the lock is gone)

    def _trouble(self, state: str, exc: BaseException, retry_in: float) -> None:
        self.health.nats, self.health.error = state, str(exc)
        if isinstance(exc, PublishFailed):
            self.health.failed(exc.reason)
        self.log.warning("relay.interrupted", nats=state, reason=str(exc), retry_in=retry_in)

    async def _session(self, stop: asyncio.Event, leader: asyncpg.Connection) -> bool:
        """One connection's worth of relaying; True once something was published."""
        c = self.config
        link = await Link.open(
            c.url, creds=c.creds, window=c.window, wait=c.ack_timeout, where=self.health.where
        )
        lost = asyncio.ensure_future(link.lost.wait())
        try:
            await link.ensure_stream(c.spec)
            self.health.nats, self.health.error = "connected", None
            self.sessions += 1
            at = await relay_state.load(self.store.pool, c.spec.name)
            stored = await self._reconcile(link, at)
            window = AckWindow(at, c.window)
            try:
                await self._follow(stop, leader, link, window, stored, lost)
            except PublishFailed as exc:  # unanswered because the server refused the subject?
                raise link.refused() or exc from None
            finally:
                with contextlib.suppress(PublishFailed):
                    window.settle()
                window.abandon()
                await relay_state.save(self.store.pool, c.spec.name, window.acked)
            return window.acked.position > at.position
        finally:
            lost.cancel()
            await link.close()

    async def _reconcile(self, link: Link, at: Checkpoint) -> dict[int, int]:
        """What the stream holds past the checkpoint (acknowledged before a crash)."""
        info = await link.js.stream_info(self.config.spec.name)
        if info.state.last_seq < at.stream_sequence:
            self.log.warning(
                "relay.stream_behind_checkpoint",
                checkpoint=at.position,
                checkpoint_sequence=at.stream_sequence,
                stream_last_sequence=info.state.last_seq,
                hint="the stream was purged or recreated; `batchledger relay reset` publishes"
                " the log again from the start",
            )
            return {}
        if info.state.last_seq == at.stream_sequence:
            return {}
        stored = await link.stored_positions(
            self.config.spec.name, at.stream_sequence, RECONCILE_LIMIT
        )
        found = {p: seq for p, seq in stored.items() if p > at.position}
        if found:
            self.log.info("relay.found_unrecorded", checkpoint=at.position, messages=len(found))
        return found

    async def _follow(
        self,
        stop: asyncio.Event,
        leader: asyncpg.Connection,
        link: Link,
        window: AckWindow,
        stored: dict[int, int],
        lost: asyncio.Future[Any],
    ) -> None:
        c = self.config
        encoder = Encoder(c.spec.prefix, link.max_payload)
        loop = asyncio.get_running_loop()
        saved = window.acked
        next_save = next_check = loop.time()
        sub = self.store.subscribe(window.acked.position, page_size=c.page_size, poll_interval=0.5)
        async with sub:
            # The next page is read while this one is published: PostgreSQL works on it
            # meanwhile (one read in flight; the subscription is not shared).
            reading = asyncio.ensure_future(sub.next_page_before(stop, within=FLUSH_SECONDS))
            try:
                while not stop.is_set():
                    if lost.done():
                        raise RelayUnavailable(f"the connection to NATS at {link.where} was lost")
                    page = await reading
                    reading = asyncio.ensure_future(
                        sub.next_page_before(stop, within=FLUSH_SECONDS)
                    )
                    if page:
                        await self._publish(page, link, window, stored, encoder, lost)
                    else:  # idle: every acknowledgement in, so the checkpoint reaches the head
                        await self._drain(window, lost)
                    now = loop.time()
                    if window.acked != saved and now >= next_save:
                        await relay_state.save(self.store.pool, c.spec.name, window.acked)
                        saved, next_save = window.acked, now + FLUSH_SECONDS
                    if now >= next_check:
                        await leader.fetchval("SELECT 1")  # the lock dies with this connection
                        next_check = now + LEADER_CHECK_SECONDS
            finally:
                reading.cancel()
                with contextlib.suppress(BaseException):
                    await reading

    async def _drain(self, window: AckWindow, lost: asyncio.Future[Any]) -> None:
        while len(window):
            await window.wait_oldest(self.config.ack_timeout, lost)
            self.health.acked = window.settle().position

    async def _publish(
        self,
        page: list[RecordedEvent],
        link: Link,
        window: AckWindow,
        stored: dict[int, int],
        encoder: Encoder,
        lost: asyncio.Future[Any],
    ) -> None:
        stream, timeout = self.config.spec.name, self.config.ack_timeout
        for event in page:
            while window.full:
                await window.wait_oldest(timeout, lost)
                window.settle()
            if stored and (sequence := stored.pop(event.position, None)) is not None:
                window.stored(event.position, sequence)
            else:
                window.sent(event.position, await link.publish(encoder.message(event), stream))
        self.health.acked = window.settle().position


def _describe(exc: BaseException) -> str:
    if isinstance(exc, nats.js.errors.APIError):
        return f"{exc.description} (code {exc.err_code})"
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return "no stream takes this subject (was the stream deleted?)"
    return f"{type(exc).__name__}: {exc}"


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
