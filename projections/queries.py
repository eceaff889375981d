"""Read queries over the projection tables, for the admin API and the schedulers."""

from __future__ import annotations

from typing import Any

from statemachine.states import BatchState, RequestState

REQUEST_STATUSES = tuple(s.value for s in RequestState)
Pool = Any  # an asyncpg Pool or Connection: both answer fetch/fetchrow


async def summary(pool: Pool, company_id: str | None = None) -> dict[str, int]:
    """Requests per status, every status present (lower case, as the API shows them)."""
    rows = await pool.fetch(
        "SELECT status, sum(n)::bigint AS n FROM request_status_counts"
        " WHERE ($1::text IS NULL OR company_id = $1) GROUP BY status",
        company_id,
    )
    counts = {s.lower(): 0 for s in REQUEST_STATUSES}
    counts.update({r["status"].lower(): int(r["n"]) for r in rows})
    return counts


_REQUEST_LIST_COLUMNS = (
    "request_id, seq, company_id, session_id, model, status, batch_id, attempts, last_error_code,"
    " last_error_message, total_tokens, cost_micro_usd, queued_at, updated_at, completed_at"
)


def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """A WHERE clause naming only the filters given.

    Optional filters written as `($n IS NULL OR col = $n)` get a generic plan that
    cannot use the keyset index; one statement per filter combination keeps it.
    """
    clauses, args = [], []
    for column, value in filters.items():
        if value is None:
            continue
        args.append(value)
        op = ">" if column == "seq" else "="
        clauses.append(f"{column} {op} ${len(args)}")
    return " AND ".join(clauses) or "TRUE", args


async def requests_page(
    pool: Pool,
    status: str,
    limit: int,
    *,
    after_seq: int | None = None,
    company_id: str | None = None,
    batch_id: str | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """A keyset page of requests in one status, oldest first; and the seq to continue after."""
    filters = {
        "company_id": company_id,
        "batch_id": batch_id,
        "status": status,
        "seq": after_seq or 0,
    }
    where, args = _where(filters)
    rows = await pool.fetch(
        f"SELECT {_REQUEST_LIST_COLUMNS} FROM requests WHERE {where}"
        f" ORDER BY seq LIMIT ${len(args) + 1}",
        *args,
        limit + 1,
    )
    page = [dict(r) for r in rows[:limit]]
    return page, (page[-1]["seq"] if len(rows) > limit else None)


async def request_detail(pool: Pool, request_id: str) -> dict[str, Any] | None:
    """One request with its analysis, usage and cost."""
    row = await pool.fetchrow(
        "SELECT r.*, a.language, a.sentiment, a.escalated, a.forwarded_hr, a.category,"
        " a.questions::text AS questions, a.summary, a.analysed_at"
        " FROM requests r LEFT JOIN session_analyses a USING (request_id) WHERE r.request_id = $1",
        request_id,
    )
    return dict(row) if row else None


async def existing_request_ids(pool: Pool, request_ids: list[str]) -> set[str]:
    """Which of these ids are known to the requests table."""
    rows = await pool.fetch(
        "SELECT request_id FROM requests WHERE request_id = ANY($1::text[])", request_ids
    )
    return {r[0] for r in rows}


async def batches_page(
    pool: Pool, limit: int, *, status: str | None = None, after_seq: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """A keyset page of batches, oldest first."""
    where, args = _where({"status": status, "seq": after_seq or 0})
    rows = await pool.fetch(
        f"SELECT * FROM batches WHERE {where} ORDER BY seq LIMIT ${len(args) + 1}", *args, limit + 1
    )
    page = [dict(r) for r in rows[:limit]]
    return page, (page[-1]["seq"] if len(rows) > limit else None)


async def batch_detail(pool: Pool, batch_id: str) -> dict[str, Any] | None:
    """One batch."""
    row = await pool.fetchrow("SELECT * FROM batches WHERE batch_id = $1", batch_id)
    return dict(row) if row else None


async def pending_requests(pool: Pool, limit: int) -> list[dict[str, Any]]:
    """Requests waiting for a batch, oldest first: what the batch creator groups."""
    rows = await pool.fetch(
        "SELECT request_id, company_id, model, version, attempts FROM requests"
        " WHERE status = $1 ORDER BY seq LIMIT $2",
        RequestState.PENDING_BATCHING.value,
        limit,
    )
    return [dict(r) for r in rows]


async def batches_in(pool: Pool, states: list[BatchState]) -> list[str]:
    """Ids of batches in any of `states`, oldest first."""
    rows = await pool.fetch(
        "SELECT batch_id FROM batches WHERE status = ANY($1::text[]) ORDER BY seq",
        [s.value for s in states],
    )
    return [r[0] for r in rows]
