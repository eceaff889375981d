"""Intake of the legacy CSV: rows, transcripts over http, file and paths, problems by line."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from eventstore import EventStore
from service.application.ledger import Actor
from service.entrypoints.intake import Importer, parse_csv
from service.tools.synthetic import ledger
from service.transcripts import TranscriptError, parse_transcript, render

GOOD = "[01.10.2026 09:00:00] User: Hello?\n[01.10.2026 09:00:05] Assistant: Hi!\nHow can I help?\n"


def row(session: str, url: str, *, start: str = "01.10.2026 09:00:00", cols: int = 16) -> list[str]:
    values = [
        session,
        start,
        "01.10.2026 09:10:00",
        "192.0.2.1",
        "NL",
        "nl",
        "2",
        "neutral",
        "0",
        "0",
        url,
        "3.1",
        "120",
        "0.01",
        "SCHEDULE_HOURS",
        "Hello?",
    ]
    return values[:cols] if cols <= 16 else values + ["extra"] * (cols - 16)


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def test_transcript_lines_without_a_header_continue_the_previous_message() -> None:
    messages = parse_transcript(GOOD)
    assert [(m.role, m.text) for m in messages] == [
        ("User", "Hello?"),
        ("Assistant", "Hi!\nHow can I help?"),
    ]
    assert render(messages).splitlines()[0] == "[01.10.2026 09:00:00] User: Hello?"


def test_a_byte_order_mark_is_not_part_of_a_session_id_or_a_transcript() -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([row("S1", "a.txt")])
    rows, problems = parse_csv("\ufeff" + buffer.getvalue())
    assert (problems, [r.session_id for r in rows]) == ([], ["S1"])
    assert parse_transcript("\ufeff" + GOOD) == parse_transcript(GOOD)


@pytest.mark.parametrize("text", ["", "no header at all", "[32.13.2026 25:00:00] User: bad time"])
def test_text_that_is_not_a_transcript_is_refused(text: str) -> None:
    with pytest.raises(TranscriptError):
        parse_transcript(text)


def test_bad_rows_are_reported_with_their_line_and_reason() -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(
        [
            row("S1", "a.txt"),
            row("S2", "b.txt", cols=15),
            row("", "c.txt"),
            row("S4", "d.txt", start="2026-10-01 09:00"),
            row("S5", ""),
        ]
    )
    rows, problems = parse_csv(buffer.getvalue())
    assert [r.session_id for r in rows] == ["S1"]
    assert [(p.line, p.reason.split(" ")[0]) for p in problems] == [
        (2, "expected"),
        (3, "session"),
        (4, "start_time"),
        (5, "transcript"),
    ]


@pytest.fixture
async def transcript_server() -> AsyncIterator[str]:
    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "missing.txt":
            raise web.HTTPNotFound()
        return web.Response(text=GOOD.replace("Hello?", f"Hello from {name}?"))

    app = web.Application()
    app.router.add_get("/t/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("chunk_rows", [2_000, 2], ids=["one-chunk", "chunks-of-2"])
async def test_import_fetches_http_file_and_relative_transcripts_and_reports_the_rest(
    store: EventStore, tmp_path: Path, transcript_server: str, chunk_rows: int
) -> None:
    (tmp_path / "rel.txt").write_text(GOOD)
    (tmp_path / "abs.txt").write_text(GOOD)
    (tmp_path / "broken.txt").write_text("nothing like a transcript")
    source = write_csv(
        tmp_path / "export.csv",
        [
            row("S1", "rel.txt"),
            row("S2", f"file://{tmp_path / 'abs.txt'}"),
            row("S3", f"{transcript_server}/t/s3.txt"),
            row("S4", f"{transcript_server}/t/missing.txt"),
            row("S5", "nowhere.txt"),
            row("S6", "broken.txt"),
            row("S7", "rel.txt", cols=3),
            row("S1", "rel.txt"),  # the same session twice in one file: queued once
        ],
    )
    importer = Importer(ledger(store), Actor("import"), chunk_rows=chunk_rows)
    report = await importer.run(str(source), "acme", "gpt-4o-mini")
    assert (report.rows, report.queued, report.already_queued) == (8, 3, 0)
    assert [(p.line, p.reason.split(":")[0]) for p in report.problems] == [
        (4, "transcript unreachable"),
        (5, "transcript unreachable"),
        (6, "transcript unreadable"),
        (7, "expected 16 columns, found 3"),
    ]
    assert "HTTP 404" in report.problems[0].reason
    again = await importer.run(str(source), "acme", "gpt-4o-mini")
    assert (again.queued, again.already_queued) == (0, 3)
    assert (
        await store.pool.fetchval("SELECT count(*) FROM events WHERE event_type = 'RequestQueued'")
        == 3
    )
    other = await importer.run(str(source), "globex", "gpt-4o-mini")
    assert other.queued == 3, "the same session of another company is another request"


def test_import_command_exits_1_when_a_row_failed_and_0_when_all_imported(
    db_dsn: str, tmp_path: Path
) -> None:
    from service.entrypoints.cli import main

    (tmp_path / "t.txt").write_text(GOOD)
    good = write_csv(tmp_path / "good.csv", [row("S1", "t.txt")])
    bad = write_csv(tmp_path / "bad.csv", [row("S2", "t.txt"), row("S3", "gone.txt")])
    assert main(["import", str(good), "--company", "acme", "--database-url", db_dsn]) == 0
    assert main(["import", str(bad), "--company", "acme", "--database-url", db_dsn]) == 1
    assert (
        main(
            ["import", str(tmp_path / "absent.csv"), "--company", "acme", "--database-url", db_dsn]
        )
        == 1
    )


def test_a_windows_1252_export_and_transcript_import_with_their_accents(
    empty_db_dsn: str, tmp_path: Path
) -> None:
    """Into a database nothing has migrated yet: the first import migrates it."""
    from service.entrypoints.cli import main

    transcript = "[01.10.2026 09:00:00] User: Où est le café ?\n"
    (tmp_path / "t.txt").write_bytes(transcript.encode("cp1252"))
    buffer = io.StringIO()
    csv.writer(buffer).writerows([row("Séance-1", "t.txt")])
    (tmp_path / "export.csv").write_bytes(buffer.getvalue().encode("cp1252"))
    args = ["import", str(tmp_path / "export.csv"), "--company", "acme"]
    assert main([*args, "--database-url", empty_db_dsn]) == 0
    rows = asyncio.run(_queued(empty_db_dsn))
    assert len(rows) == 1
    assert rows[0]["session_id"] == "Séance-1"
    assert "Où est le café ?" in rows[0]["transcript"]


async def _queued(dsn: str) -> list[dict[str, object]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT data->>'session_id' AS session_id, data->>'transcript' AS transcript"
            " FROM events WHERE event_type = 'RequestQueued'"
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def test_nul_bytes_in_an_export_are_dropped_not_fatal() -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([row("S\x001", "a.txt"), row("S2", "b.txt")])
    rows, problems = parse_csv(buffer.getvalue())
    assert ([r.session_id for r in rows], problems) == (["S1", "S2"], [])
    assert parse_transcript("[01.10.2026 09:00:00] User: a\x00b")[0].text == "ab"
