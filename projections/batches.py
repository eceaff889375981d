"""Projection "batches": one row per batch with its OpenAI ids, counts and timeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import assert_never

import asyncpg
import msgspec

from eventstore import RecordedEvent
from projections.base import ID_LIST, Decoded, KeyedReplay, Tables, join_ids, upsert
from statemachine.batch import next_state
from statemachine.events import (
    BATCH_EVENTS,
    BatchCancelRequested,
    BatchEvent,
    BatchFileUploaded,
    BatchOutputLineRejected,
    BatchPlanned,
    BatchProcessed,
    BatchRequestsReleased,
    BatchStatusObserved,
    BatchStatusUnrecognized,
    BatchSubmissionFailed,
    BatchSubmitted,
    BatchUploadStarted,
)
from statemachine.states import ENDED_AT_OPENAI
from statemachine.states import BatchState as BS


class BatchRow(msgspec.Struct, kw_only=True, gc=False):
    """One row of `batches`; field order is column order."""

    batch_id: str
    seq: int
    company_id: str
    model: str
    status: BS
    request_count: int
    openai_batch_id: str | None = None
    openai_status: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts_total: int = 0
    counts_completed: int = 0
    counts_failed: int = 0
    completed: int = 0
    failed: int = 0
    missing: int = 0
    rejected_lines: int = 0
    last_error: str | None = None
    planned_at: datetime
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    processed_at: datetime | None = None
    updated_at: datetime
    version: int
    position: int


COLUMNS = tuple(BatchRow.__struct_fields__)


def project(row: BatchRow | None, recorded: RecordedEvent, event: BatchEvent) -> BatchRow | None:
    """The row after one event (pure); the status comes from the domain's `next_state`."""
    at, pos, ver = recorded.metadata.occurred_at, recorded.position, recorded.version
    if isinstance(event, BatchPlanned):
        return BatchRow(
            batch_id=event.batch_id,
            seq=pos,
            company_id=event.company_id,
            model=event.model,
            status=BS.PENDING,
            request_count=len(event.request_ids),
            planned_at=at,
            updated_at=at,
            version=ver,
            position=pos,
        )
    if row is None:
        return None
    status = next_state(row.batch_id, row.status, event)
    row = msgspec.structs.replace(row, status=status, updated_at=at, version=ver, position=pos)
    match event:
        case BatchFileUploaded():
            row.input_file_id = event.input_file_id
        case BatchSubmitted():
            row.openai_batch_id, row.input_file_id = event.openai_batch_id, event.input_file_id
            row.openai_status, row.submitted_at = "validating", at
        case BatchSubmissionFailed():
            row.last_error, row.finished_at = f"{event.code}: {event.message}", at
        case BatchStatusObserved():
            _observed(row, event, at)
        case BatchStatusUnrecognized():
            row.openai_status = event.openai_status
            c = event.request_counts
            row.counts_total, row.counts_completed, row.counts_failed = (
                c.total,
                c.completed,
                c.failed,
            )
        case BatchProcessed():
            row.processed_at = at
            row.completed, row.failed, row.missing = event.completed, event.failed, event.missing
        case BatchRequestsReleased():
            row.failed, row.processed_at = event.requeued + event.failed, at
        case BatchOutputLineRejected():
            row.rejected_lines += 1
        case BatchUploadStarted() | BatchCancelRequested():
            pass
        case _:
            assert_never(event)
    return row


def _observed(row: BatchRow, event: BatchStatusObserved, at: datetime) -> None:
    row.openai_status = event.openai_status
    c = event.request_counts
    row.counts_total, row.counts_completed, row.counts_failed = c.total, c.completed, c.failed
    row.output_file_id, row.error_file_id = event.output_file_id, event.error_file_id
    if event.errors:
        row.last_error = "; ".join(e.describe() for e in event.errors[:3])
    if row.status in ENDED_AT_OPENAI:
        row.finished_at = at


class BatchesProjection:
    """Batches from the `batch` streams."""

    name: str = "batches"
    tables: tuple[str, ...] = ("batches",)
    categories: tuple[str, ...] = ("batch",)

    async def apply(
        self, conn: asyncpg.Connection, tables: Tables, events: Sequence[Decoded]
    ) -> None:
        """Load the touched rows, fold the events over them, write them back."""
        table = tables["batches"]
        rows = await _load(
            conn, table, list({ev.batch_id for _, ev in events if isinstance(ev, BATCH_EVENTS)})
        )
        fold(rows, events)
        await _save(conn, table, rows)

    async def resume(self, conn: asyncpg.Connection, tables: Tables) -> None:
        """Nothing to repair: every version kept these tables the same way."""

    def replay(self) -> BatchesReplay:
        """An in-memory fold for a rebuild."""
        return BatchesReplay()


class BatchesReplay(KeyedReplay[BatchRow]):
    """A rebuild's fold of batches."""

    table = "batches"
    key_field = "batch_id"

    async def load(
        self, conn: asyncpg.Connection, table: str, ids: list[str]
    ) -> dict[str, BatchRow]:
        """Stored batches by id."""
        return await _load(conn, table, ids)

    def fold(self, events: Sequence[Decoded]) -> None:
        """Fold into the batches in memory."""
        fold(self.rows, events)

    async def save(self, conn: asyncpg.Connection, tables: Tables, *, fresh: bool) -> None:
        """Write the batches."""
        await _save(conn, tables["batches"], self.rows, fresh=fresh)


def fold(rows: dict[str, BatchRow], events: Sequence[Decoded]) -> None:
    """Fold events over the rows by batch id."""
    for recorded, event in events:
        if not isinstance(event, BATCH_EVENTS):
            continue
        bid = event.batch_id
        new = project(rows.get(bid), recorded, event)
        if new is not None:
            rows[bid] = new


async def _load(conn: asyncpg.Connection, table: str, ids: list[str]) -> dict[str, BatchRow]:
    records = await conn.fetch(
        f"SELECT {', '.join(COLUMNS)} FROM {table} WHERE batch_id = ANY({ID_LIST})",
        join_ids(ids),
    )
    rows = {r[0]: BatchRow(**dict(r)) for r in records}
    for row in rows.values():
        row.status = BS(row.status)
    return rows


async def _save(
    conn: asyncpg.Connection, table: str, rows: dict[str, BatchRow], *, fresh: bool = False
) -> None:
    records = [msgspec.structs.astuple(r) for r in rows.values()]
    await upsert(conn, table, COLUMNS, "batch_id", records, fresh=fresh)
