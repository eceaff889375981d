"""Intake of the legacy LiveDash CSV export: rows, transcripts, and one request per session."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import aiohttp
import msgspec

from service.application.ledger import Actor, Ledger
from service.application.requests import queue_requests
from service.ids import request_id
from service.transcripts import TranscriptError, parse_time, parse_transcript, render
from statemachine.commands import QueueRequest

COLUMNS = (
    "session_id",
    "start_time",
    "end_time",
    "ip",
    "country",
    "language",
    "messages_sent",
    "sentiment",
    "escalated",
    "forwarded_hr",
    "transcript_url",
    "avg_response_time",
    "tokens",
    "tokens_eur",
    "category",
    "initial_message",
)
MAX_TRANSCRIPT_BYTES = 5 * 1024 * 1024


class SessionRow(msgspec.Struct, frozen=True):
    """A CSV row that passed validation."""

    line: int
    session_id: str
    transcript_url: str


@dataclass
class Problem:
    """A row that was not imported, and why."""

    line: int
    reason: str


@dataclass
class ImportReport:
    """What an import did."""

    rows: int = 0
    queued: int = 0
    already_queued: int = 0
    problems: list[Problem] = field(default_factory=list)


def parse_csv(text: str) -> tuple[list[SessionRow], list[Problem]]:
    """Valid rows and the problems of the others, each with its line number."""
    rows, problems = [], []
    # The csv module stops at a NUL byte; exports sometimes carry them, and they mean
    # nothing. A byte-order mark would become part of the first session id.
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff").replace("\x00", "")))
    line = 1
    for record in reader:
        start, line = line, reader.line_num + 1
        if not record or all(not f.strip() for f in record):
            continue
        if len(record) != len(COLUMNS):
            problems.append(Problem(start, f"expected {len(COLUMNS)} columns, found {len(record)}"))
            continue
        values = dict(zip(COLUMNS, (f.strip() for f in record), strict=True))
        reason = _row_problem(values)
        if reason:
            problems.append(Problem(start, reason))
            continue
        rows.append(SessionRow(start, values["session_id"], values["transcript_url"]))
    return rows, problems


def _row_problem(values: dict[str, str]) -> str | None:
    if not values["session_id"]:
        return "session id is empty"
    for name in ("start_time", "end_time"):
        try:
            parse_time(values[name])
        except ValueError:
            return f"{name} {values[name]!r} is not DD.MM.YYYY HH:MM:SS"
    if not values["transcript_url"]:
        return "transcript URL is empty"
    return None


async def fetch_transcript(url: str, base: Path, http: aiohttp.ClientSession) -> str:
    """The transcript text from http(s), file:// or a path relative to the CSV's folder."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        timeout = aiohttp.ClientTimeout(total=30)
        async with http.get(url, timeout=timeout) as response:
            if response.status != 200:
                raise OSError(f"HTTP {response.status}")
            body = await response.content.read(MAX_TRANSCRIPT_BYTES + 1)
    elif parsed.scheme in ("file", ""):
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url)
        path = path if path.is_absolute() else base / path
        body = await asyncio.to_thread(path.read_bytes)
    else:
        raise OSError(f"unsupported scheme {parsed.scheme!r}")
    if len(body) > MAX_TRANSCRIPT_BYTES:
        raise OSError(f"larger than {MAX_TRANSCRIPT_BYTES} bytes")
    return decode_text(body)


def decode_text(body: bytes) -> str:
    """UTF-8, or Windows-1252 when it is not valid UTF-8 (what older exports were saved in)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace")


async def read_source(source: str, http: aiohttp.ClientSession) -> tuple[str, Path]:
    """The CSV text and the folder relative transcript paths are resolved against."""
    if urlparse(source).scheme in ("http", "https"):
        async with http.get(source, timeout=aiohttp.ClientTimeout(total=60)) as response:
            if response.status != 200:
                raise OSError(f"HTTP {response.status} for {source}")
            return decode_text(await response.read()), Path.cwd()
    path = Path(unquote(urlparse(source).path)) if source.startswith("file://") else Path(source)
    return decode_text(await asyncio.to_thread(path.read_bytes)), path.parent


class Importer:
    """Turns a CSV export into queued analysis requests, once per session."""

    def __init__(
        self,
        ledger: Ledger,
        actor: Actor,
        *,
        concurrency: int = 16,
        chunk_rows: int = 2_000,
    ) -> None:
        self.ledger = ledger
        self.actor = actor
        self.concurrency = concurrency
        # Rows fetched and queued per append: memory stays flat on a large export, and
        # each append holds the writer lock only briefly.
        self.chunk_rows = chunk_rows

    async def run(
        self,
        source: str,
        company_id: str,
        model: str,
        progress: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Import every good row; report the others with their line and reason."""
        async with aiohttp.ClientSession() as http:
            text, base = await read_source(source, http)
            rows, problems = parse_csv(text)
            report = ImportReport(rows=len(rows) + len(problems), problems=problems)
            in_file: set[str] = set()
            for start in range(0, len(rows), self.chunk_rows):
                chunk = rows[start : start + self.chunk_rows]
                commands = await self._transcripts(
                    chunk, base, http, company_id, model, report, progress
                )
                # The same session twice in one file is queued once, not "already queued".
                fresh = [c for c in commands if c.request_id not in in_file]
                in_file.update(c.request_id for c in commands)
                await self._queue(fresh, report)
        report.problems.sort(key=lambda p: p.line)
        return report

    async def _transcripts(
        self,
        rows: list[SessionRow],
        base: Path,
        http: aiohttp.ClientSession,
        company_id: str,
        model: str,
        report: ImportReport,
        progress: Callable[[int], None] | None,
    ) -> list[QueueRequest]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(row: SessionRow) -> QueueRequest | None:
            async with gate:
                try:
                    text = await fetch_transcript(row.transcript_url, base, http)
                    transcript = render(parse_transcript(text))
                except (OSError, aiohttp.ClientError, TimeoutError) as exc:
                    report.problems.append(
                        Problem(row.line, f"transcript unreachable: {exc or type(exc).__name__}")
                    )
                    return None
                except TranscriptError as exc:
                    report.problems.append(Problem(row.line, f"transcript unreadable: {exc}"))
                    return None
                finally:
                    if progress is not None:
                        progress(1)
            return QueueRequest(
                request_id=request_id(company_id, row.session_id),
                company_id=company_id,
                session_id=row.session_id,
                model=model,
                transcript=transcript,
                source="import",
            )

        results = await asyncio.gather(*(one(r) for r in rows))
        unique = {c.request_id: c for c in results if c is not None}
        return list(unique.values())

    async def _queue(self, commands: list[QueueRequest], report: ImportReport) -> None:
        done = await queue_requests(self.ledger, commands, self.actor)
        report.queued += len(done.created)
        report.already_queued += len(done.existing)
