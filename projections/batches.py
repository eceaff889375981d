"""Projection "batches": one row per batch with its OpenAI ids, counts and timeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from eventstore import RecordedEvent
from projections.base import ID_LIST, Decoded, KeyedReplay, Tables, join_ids, upsert
from statemachine.events import (
    BatchCancelRequested,
    BatchFileUploaded,
    BatchOutputLineRejected,
    BatchPlanned,
    BatchProcessed,
    BatchRequestsReleased,
    BatchStatusObserved,
    BatchSubmissionFailed,
    BatchSubmitted,
    BatchUploadStarted,
)
from statemachine.openai_status import state_for
from statemachine.states import BatchState as BS


class BatchRow(msgspec.Struct, kw_only=True, gc=False):
    """One row of `batches`; field order is column order."""

    batch_id: str
    seq: int
    company_id: str
    model: str
    status: str
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
_FINISHED = {BS.COMPLETED, BS.FAILED, BS.EXPIRED, BS.CANCELLED}


def project(row: BatchRow | None, recorded: RecordedEvent, event: object) -> BatchRow | None:
    """The row after one event (pure)."""
    at, pos, ver = recorded.metadata.occurred_at, recorded.position, recorded.version
    if isinstance(event, BatchPlanned):
        return BatchRow(
            batch_id=event.batch_id,
            seq=pos,
            company_id=event.company_id,
            model=event.model,
            status=BS.PENDING.value,
            request_count=len(event.request_ids),
            planned_at=at,
            updated_at=at,
            version=ver,
            position=pos,
        )
    if row is None:
        return None
    row = msgspec.structs.replace(row, updated_at=at, version=ver, position=pos)
    if isinstance(event, BatchUploadStarted):
        row.status = BS.UPLOADING.value
    elif isinstance(event, BatchFileUploaded):
        row.input_file_id = event.input_file_id
    elif isinstance(event, BatchSubmitted):
        row.status, row.openai_batch_id = BS.VALIDATING.value, event.openai_batch_id
        row.input_file_id, row.openai_status, row.submitted_at = (
            event.input_file_id,
            "validating",
            at,
        )
    elif isinstance(event, BatchSubmissionFailed):
        row.status, row.last_error, row.finished_at = (
            BS.FAILED.value,
            f"{event.code}: {event.message}",
            at,
        )
    elif isinstance(event, BatchStatusObserved):
        _observed(row, event, at)
    elif isinstance(event, BatchCancelRequested):
        row.status = BS.CANCELLING.value
    elif isinstance(event, BatchProcessed):
        row.status, row.processed_at = BS.PROCESSED.value, at
        row.completed, row.failed, row.missing = event.completed, event.failed, event.missing
    elif isinstance(event, BatchRequestsReleased):
        row.failed, row.processed_at = event.requeued + event.failed, at
    elif isinstance(event, BatchOutputLineRejected):
        row.rejected_lines += 1
    return row


def _observed(row: BatchRow, event: BatchStatusObserved, at: datetime) -> None:
    target = state_for(event.openai_status)
    if not (
        row.status == BS.CANCELLING.value
        and target in (BS.VALIDATING, BS.IN_PROGRESS, BS.FINALIZING)
    ):
        row.status = target.value
    row.openai_status = event.openai_status
    c = event.request_counts
    row.counts_total, row.counts_completed, row.counts_failed = c.total, c.completed, c.failed
    row.output_file_id, row.error_file_id = event.output_file_id, event.error_file_id
    if event.errors:
        row.last_error = "; ".join(f"{e.code}: {e.message}" for e in event.errors[:3])
    if target in _FINISHED:
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
        rows = await _load(conn, table, list({getattr(ev, "batch_id", "") for _, ev in events}))
        fold(rows, events)
        await _save(conn, table, rows)

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
        bid = getattr(event, "batch_id", "")
        new = project(rows.get(bid), recorded, event)
        if new is not None:
            rows[bid] = new


async def _load(conn: asyncpg.Connection, table: str, ids: list[str]) -> dict[str, BatchRow]:
    records = await conn.fetch(
        f"SELECT {', '.join(COLUMNS)} FROM {table} WHERE batch_id = ANY({ID_LIST})",
        join_ids(ids),
    )
    return {r[0]: BatchRow(**dict(r)) for r in records}


async def _save(
    conn: asyncpg.Connection, table: str, rows: dict[str, BatchRow], *, fresh: bool = False
) -> None:
    records = [msgspec.structs.astuple(r) for r in rows.values()]
    await upsert(conn, table, COLUMNS, "batch_id", records, fresh=fresh)
