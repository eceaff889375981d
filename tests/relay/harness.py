"""NATS for the relay tests: the machine's server, servers of our own with a config, a proxy
that can cut the relay off, and a durable consumer that checks what arrived."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from service.adapters.jetstream import POSITION, StreamSpec

DEFAULT_URL = "nats://127.0.0.1:4222"
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def nats_url() -> str:
    """The NATS the tests use: NATS_URL, else the machine's default address."""
    return os.environ.get("NATS_URL") or DEFAULT_URL


def unique_spec(**changes: object) -> StreamSpec:
    """A stream and subject prefix of this test alone."""
    tag = uuid.uuid4().hex[:10]
    spec = StreamSpec(name=f"BLTEST_{tag.upper()}", prefix=f"bltest{tag}")
    return msgspec.structs.replace(spec, **changes) if changes else spec


async def connect(url: str, **options: Any) -> Client:
    """A plain nats-py client (an integrator's)."""
    nc = Client()
    await nc.connect(servers=[url], allow_reconnect=False, connect_timeout=3, **options)
    return nc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NatsServer:
    """A nats-server process of one test, from a config text."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def nats_server(tmp: Path, config: str = "", *, jetstream: bool = True) -> Iterator[NatsServer]:
    """Run `nats-server` with `config` (a `{port}` and `{store}` may appear in it)."""
    port = free_port()
    store = tmp / f"js-{port}"
    js = f'jetstream {{ store_dir: "{store}" }}\n' if jetstream else ""
    path = tmp / f"nats-{port}.conf"
    path.write_text(f"port: {port}\n{js}{config.format(port=port, store=store)}")
    process = subprocess.Popen(
        [NATS_SERVER, "-c", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = NatsServer(port, process)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"nats-server did not start with {path}")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


class Proxy:
    """A TCP relay to NATS that can drop every connection and refuse new ones for a while."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop listening (new connections are refused) and drop the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._pipes):
            t.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)


@dataclass
class Received:
    """What a durable consumer got: each message's position, subject and body."""

    positions: list[int] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


async def durable(js: JetStreamContext, stream: str, name: str, subject: str) -> None:
    """An integrator's durable pull consumer with explicit acks on `subject`."""
    await js.add_consumer(
        stream,
        api.ConsumerConfig(
            name=name,
            durable_name=name,
            filter_subject=subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
        ),
    )


async def drain(
    js: JetStreamContext, stream: str, name: str, until: int, *, seconds: float = 60
) -> Received:
    """Fetch and ack from a durable consumer until `until` messages came (or time is up)."""
    sub = await js.pull_subscribe_bind(durable=name, stream=stream)
    got = Received()
    deadline = asyncio.get_running_loop().time() + seconds
    try:
        while len(got.positions) < until and asyncio.get_running_loop().time() < deadline:
            try:
                msgs = await sub.fetch(1000, timeout=1)
            except TimeoutError:
                continue
            for m in msgs:
                headers = dict(m.headers or {})
                got.positions.append(int(headers[POSITION]))
                got.subjects.append(m.subject)
                got.bodies.append(m.data)
                got.headers.append(headers)
                await m.ack()
        # Anything more would be a duplicate: give it a moment to show up.
        with contextlib.suppress(TimeoutError):
            for m in await sub.fetch(100, timeout=0.5):
                got.positions.append(int(dict(m.headers or {})[POSITION]))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return got
