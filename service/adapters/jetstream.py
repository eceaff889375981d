"""NATS JetStream for the relay: subjects, headers, the stream's settings, a connection that
says what went wrong, and pipelined publishing."""

from __future__ import annotations

import asyncio
import contextlib
import string
from dataclasses import dataclass, field

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from eventstore import RecordedEvent
from service.feed import event_item

MSG_ID = "Nats-Msg-Id"
POSITION = "Batchledger-Position"
STREAM_ID = "Batchledger-Stream-Id"
VERSION = "Batchledger-Version"
TYPE = "Batchledger-Type"
RECORDED_AT = "Batchledger-Recorded-At"
CORRELATION_ID = "Batchledger-Correlation-Id"
COMPANY = "Batchledger-Company"
DATA_OMITTED = "Batchledger-Data-Omitted"
# JetStream refuses a message whose predecessor in the stream is not the one named here, so
# a message it did not store can never be followed by the next: no gap, no reordering.
EXPECTED_STREAM = "Nats-Expected-Stream"
EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"

# Company ids keep letters, digits and _ - : @ as they are; any other character (the
# API allows ".", which would split the subject) becomes %XX per UTF-8 byte. No encoded
# id is a bare "%none", so events without a company (none are written today) cannot
# land on a company's subjects.
_SAFE = frozenset(string.ascii_letters + string.digits + "_-:@")
UNSCOPED = "%none"
# Room for the subject, headers and protocol line within the server's max_payload.
_ENVELOPE_BYTES = 2048


class RelayUnavailable(Exception):
    """NATS cannot be reached or the connection dropped: the relay retries."""


class RelayMisconfigured(Exception):
    """NATS answers but refuses the relay (JetStream off, permissions, a conflicting stream)."""


def company_token(scope: str | None) -> str:
    """The subject token of a company id (reversible: %XX for anything outside [A-Za-z0-9_-:@])."""
    if not scope:
        return UNSCOPED
    if all(c in _SAFE for c in scope):
        return scope
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in scope)


def subject_for(prefix: str, event: RecordedEvent) -> str:
    """`<prefix>.<companyId>.<category>.<EventType>`."""
    return f"{prefix}.{company_token(event.scope)}.{event.category}.{event.type}"


class Message(msgspec.Struct, frozen=True, gc=False):
    """One event as a NATS message."""

    position: int
    subject: str
    headers: dict[str, str]
    payload: bytes


class Encoder:
    """Turns recorded events, in log order, into messages that each name their predecessor."""

    def __init__(self, prefix: str, max_payload: int, stream: str) -> None:
        self.prefix, self.stream = prefix, stream
        self.max_body = max(max_payload - _ENVELOPE_BYTES, 1024)
        self._encode = msgspec.json.Encoder().encode
        self._subjects: dict[tuple[str | None, str, str], str] = {}
        self._previous: str | None = None  # the id of the message before the next one
        self._after_sequence: int | None = None

    def expect(self, sequence: int) -> None:
        """The next message (a session's first) must follow stream sequence `sequence`."""
        self._previous, self._after_sequence = None, sequence

    def message(self, e: RecordedEvent) -> Message:
        """The message of the next event; too large a body goes without its `data`."""
        headers = self._headers(e)
        item = event_item(e)
        payload = self._encode(item)
        if len(payload) > self.max_body:
            # NATS refuses a message over max_payload (1 MB by default) and a transcript can
            # exceed it: the consumer fetches the data with GET /events?after=<position - 1>.
            headers[DATA_OMITTED] = str(len(item.data))
            payload = self._encode(msgspec.structs.replace(item, data=msgspec.Raw(b"null")))
        return Message(e.position, self._subject(e), headers, payload)

    def _headers(self, e: RecordedEvent) -> dict[str, str]:
        headers = {
            MSG_ID: str(e.id),
            POSITION: str(e.position),
            STREAM_ID: e.stream_id,
            VERSION: str(e.version),
            TYPE: e.type,
            RECORDED_AT: e.recorded_at.isoformat(),
            EXPECTED_STREAM: self.stream,
        }
        if self._previous is not None:
            headers[EXPECTED_LAST_MSG_ID] = self._previous
        elif self._after_sequence is not None:
            headers[EXPECTED_LAST_SEQUENCE] = str(self._after_sequence)
        if e.metadata.correlation_id:
            headers[CORRELATION_ID] = e.metadata.correlation_id
        if e.scope:
            headers[COMPANY] = e.scope
        self._previous = headers[MSG_ID]
        return headers

    def _subject(self, e: RecordedEvent) -> str:
        key = (e.scope, e.category, e.type)
        subject = self._subjects.get(key)
        if subject is None:
            subject = self._subjects.setdefault(key, subject_for(self.prefix, e))
        return subject


class Stored(msgspec.Struct, frozen=True, gc=False):
    """A relayed message the stream holds: its event's position and id, its sequence."""

    position: int
    msg_id: str
    sequence: int


class Tail(msgspec.Struct, frozen=True):
    """The stream past a sequence: its first and last sequence, and the relay's messages."""

    first_seq: int
    last_seq: int
    messages: list[Stored]


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The JetStream stream the relay creates or updates at start."""

    name: str
    prefix: str
    retention: str = "limits"
    max_age_seconds: int = 0
    max_bytes: int = -1
    replicas: int = 1
    duplicate_window_seconds: int = 120

    def config(self) -> api.StreamConfig:
        """As nats-py sends it."""
        return api.StreamConfig(
            name=self.name,
            subjects=[f"{self.prefix}.>"],
            retention=api.RetentionPolicy(self.retention),
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.OLD,
            max_age=float(self.max_age_seconds),
            max_bytes=self.max_bytes,
            max_msgs=-1,
            max_msgs_per_subject=-1,
            max_msg_size=-1,  # larger events go with their data omitted (Encoder)
            num_replicas=self.replicas,
            duplicate_window=float(self.duplicate_window_seconds),
        )


@dataclass
class Link:
    """One connection to NATS: its JetStream context, and whether and why it was lost."""

    nc: Client
    js: JetStreamContext
    where: str
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    refusals: list[str] = field(default_factory=list)  # permission violations the server sent

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        creds: str | None,
        window: int,
        wait: float,
        where: str,
        inbox: str = "_INBOX",
    ) -> Link:
        """Connect once (the relay, not nats-py, decides when to try again)."""
        link: Link | None = None
        servers = [u.strip() for u in url.split(",")]
        failures: list[Exception] = []
        tried_all = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            failures.append(exc)  # nats-py reports connection failures here, not by raising
            if link is None and len(failures) >= len(servers):
                tried_all.set()
            if link is not None and "permissions violation" in str(exc).lower():
                link.refusals.append(str(exc).strip())

        async def on_closed() -> None:
            if link is not None:
                link.lost.set()

        nc = Client()
        connecting = asyncio.ensure_future(
            nc.connect(
                servers=servers,
                name="batchledger-relay",
                allow_reconnect=False,
                # Each server gets its share: one that drops packets must not use up
                # the whole attempt before the next is tried.
                connect_timeout=max(1, round(wait / len(servers))),
                max_reconnect_attempts=0,
                user_credentials=creds,
                inbox_prefix=inbox,
                error_cb=on_error,
                closed_cb=on_closed,
                disconnected_cb=on_closed,
            )
        )
        # nats-py retries a refused first connection forever, whatever its options say: the
        # attempt ends when every server failed once, or after `wait`.
        giving_up = asyncio.ensure_future(tried_all.wait())
        try:
            await asyncio.wait({connecting, giving_up}, timeout=wait, return_when="FIRST_COMPLETED")
        except asyncio.CancelledError:  # serve is stopping: leave no nats-py task behind
            await _abandon(nc, connecting)
            raise
        finally:
            giving_up.cancel()
        if not connecting.done() or connecting.exception() is not None:
            await _abandon(nc, connecting)
            cause = failures[-1] if failures else TimeoutError(f"no answer within {wait:g}s")
            if "authorization violation" in str(cause).lower():
                raise RelayMisconfigured(
                    f"NATS at {where} refuses the relay's credentials: {describe(cause)}"
                )
            raise RelayUnavailable(f"NATS at {where} is unreachable: {describe(cause)}")
        link = cls(nc, nc.jetstream(timeout=wait, publish_async_max_pending=window), where)
        return link

    @property
    def max_payload(self) -> int:
        """The server's largest message."""
        return int(self.nc.max_payload)

    async def ensure_stream(self, spec: StreamSpec) -> api.StreamInfo:
        """Create the stream, or update it to the settings; a clear error when refused."""
        wanted = spec.config()
        try:
            try:
                info = await self.js.stream_info(spec.name)
            except nats.js.errors.NotFoundError:
                return await self.js.add_stream(wanted)
            if _differs(info.config, wanted):
                return await self.js.update_stream(wanted)
            return info
        except nats.js.errors.ServiceUnavailableError:
            raise RelayMisconfigured(self._jetstream_off()) from None
        except nats.errors.NoRespondersError:
            raise RelayMisconfigured(self._jetstream_off()) from None
        except nats.errors.TimeoutError:
            raise self._refused_or_slow("the JetStream API ($JS.API.>)") from None
        except nats.js.errors.APIError as exc:
            raise RelayMisconfigured(
                f"JetStream at {self.where} refuses stream {spec.name!r} with subjects"
                f" {spec.prefix}.>: {exc.description} (code {exc.err_code})"
            ) from None

    async def publish(self, m: Message) -> asyncio.Future[api.PubAck]:
        """Send one message; the future resolves with JetStream's acknowledgement."""
        return await self.js.publish_async(m.subject, m.payload, headers=m.headers)

    async def tail(self, stream: str, after_sequence: int, limit: int) -> Tail:
        """The relay's messages the stream holds after a sequence, in sequence order."""
        info = await self.js.stream_info(stream)
        first, last = max(after_sequence + 1, info.state.first_seq), info.state.last_seq
        if last - first + 1 > limit:
            raise RelayMisconfigured(
                f"stream {stream} holds {last - first + 1:,} messages past the relay's checkpoint"
                f" (more than {limit:,} to check): another publisher, or a checkpoint moved by"
                " hand; `batchledger relay reset --to N` starts from a position you choose"
            )
        found: list[Stored] = []
        for start in range(first, last + 1, 256):
            chunk = range(start, min(start + 256, last + 1))
            msgs = await asyncio.gather(*(self._get(stream, seq) for seq in chunk))
            found += [m for m in msgs if m is not None]
        return Tail(info.state.first_seq, last, found)

    async def resume_sequence(self, stream: str, position: int) -> int:
        """The stream sequence a relay reset to `position` resumes after."""
        # What the stream holds past it is then found at start and not sent twice. Events
        # after `position` gone from the stream while later ones remain are refused:
        # publishing them now would put them after the later ones.
        held = await self.sequence_of(stream, position)
        if held:
            return held
        info = await self.js.stream_info(stream)
        first = None
        if info.state.messages:
            first = await self._first_position(stream, info.state.first_seq, info.state.last_seq)
        if first is None:  # an empty stream (purged, or aged out): everything goes again
            return int(info.state.last_seq)
        if first == position + 1:
            return int(info.state.first_seq) - 1
        raise RelayMisconfigured(
            f"stream {stream} starts at event {first}: events {position + 1} to {first - 1}"
            f" are no longer in it (aged out or purged). Reset to {first - 1} or later, or"
            " delete the stream to publish the log again from an earlier position"
        )

    async def _first_position(self, stream: str, first: int, last: int) -> int | None:
        for sequence in range(first, last + 1):
            if (m := await self._get(stream, sequence)) is not None:
                return m.position
        return None

    async def sequence_of(self, stream: str, position: int) -> int:
        """The sequence of the last message at or before log position `position` (0: none)."""
        # A binary search: positions rise with sequences in the relay's stream.
        info = await self.js.stream_info(stream)
        if not info.state.messages:
            return 0
        lo, hi, best = max(info.state.first_seq, 1), info.state.last_seq, 0
        while lo <= hi:
            mid = (lo + hi) // 2
            probe = mid
            while probe >= lo and (m := await self._get(stream, probe)) is None:
                probe -= 1  # deleted messages: look below
            if probe < lo or m is None:
                lo = mid + 1
            elif m.position <= position:
                best, lo = m.sequence, mid + 1
            else:
                hi = probe - 1
        return best

    async def _get(self, stream: str, sequence: int) -> Stored | None:
        """One message's position and id; None for a message deleted or not the relay's."""
        try:
            msg = await self.js.get_msg(stream, sequence)
        except nats.js.errors.NotFoundError:
            return None
        headers = msg.headers or {}
        if POSITION not in headers or MSG_ID not in headers:
            return None
        return Stored(int(headers[POSITION]), headers[MSG_ID], sequence)

    def refused(self) -> RelayMisconfigured | None:
        """The server's last permission refusal, as an error, if it sent one."""
        if not self.refusals:
            return None
        return RelayMisconfigured(
            f"NATS at {self.where} refuses the relay's user: {self.refusals[-1]}; grant it"
            " publish on the stream's subjects and on $JS.API.> (docs/integrations.md)"
        )

    def _refused_or_slow(self, what: str) -> Exception:
        return self.refused() or RelayUnavailable(
            f"NATS at {self.where} did not answer on {what} in time"
        )

    def _jetstream_off(self) -> str:
        return (
            f"JetStream is not enabled on the NATS server at {self.where}: start nats-server"
            " with -js (or a jetstream {} block in its config), or unset NATS_URL"
        )

    async def close(self) -> None:
        """Close the connection without waiting on a server that is gone."""
        # Closing a dead connection can fail in many ways; it is gone either way.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.close(), 2.0)


async def _abandon(nc: Client, connecting: asyncio.Future[None]) -> None:
    """Stop a connection attempt and close what it opened."""
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 2.0)


def _differs(have: api.StreamConfig, want: api.StreamConfig) -> bool:
    """Whether a stream's settings differ from the ones the relay is configured with."""
    fields = (
        "subjects",
        "retention",
        "storage",
        "max_age",
        "max_bytes",
        "max_msgs",
        "max_msgs_per_subject",
        "max_msg_size",
        "num_replicas",
        "duplicate_window",
        "discard",
    )
    return any(getattr(have, f) != getattr(want, f) for f in fields)


def describe(exc: BaseException) -> str:
    """A NATS error as one line for logs and /readyz."""
    if isinstance(exc, nats.js.errors.APIError):
        return f"{exc.description} (code {exc.err_code})"
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return "no stream takes this subject (was the stream deleted?)"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def where_of(url: str) -> str:
    """The servers of a NATS URL without any user or password (safe to log)."""
    hosts = []
    for part in url.split(","):
        scheme, _, rest = part.strip().partition("://")
        hosts.append(f"{scheme}://{rest.rpartition('@')[2]}")
    return ",".join(hosts)
