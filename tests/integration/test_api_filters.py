"""Status filters read the status in any case, the seed's own spelling included."""

from __future__ import annotations

import re
from typing import Any

import pytest

from service.entrypoints.api.openapi import document
from service.tools.synthetic import ledger, queue_many, run_batch
from tests.integration.api_fixtures import Api

BASE = "/api/admin/legacy"
REQUEST_STATUSES = [
    "pending_batching",
    "batching_in_progress",
    "processing_complete",
    "processing_failed",
]


async def get(api: Api, path: str, **params: str) -> tuple[int, dict[str, Any]]:
    r = await api.client.get(f"{BASE}{path}", params=params, headers=api.auth("support"))
    body: dict[str, Any] = await r.json()
    return r.status, body


async def seed(api: Api) -> None:
    """Eight requests through batch b1: six complete, two fail for good."""
    agg = ledger(api.runtime.store)
    ids = await queue_many(agg, 8)
    await run_batch(agg, "b1", ids, fail_every=4, retryable=False)
    await api.runtime.catch_up()


async def test_status_filter_accepts_the_seeds_spelling_in_any_case(api: Api) -> None:
    await seed(api)
    pages = {}
    for spelling in ("processing_failed", "PROCESSING_FAILED", "Processing_Failed"):
        status, body = await get(api, "/requests", status=spelling)
        assert status == 200, (spelling, body)
        pages[spelling] = [(r["id"], r["status"]) for r in body["requests"]]
    assert len(pages["processing_failed"]) == 2
    assert pages["PROCESSING_FAILED"] == pages["Processing_Failed"] == pages["processing_failed"]
    assert {s for _, s in pages["PROCESSING_FAILED"]} == {"processing_failed"}


async def test_a_cursor_from_one_spelling_of_a_status_continues_under_another(api: Api) -> None:
    await seed(api)
    _, first = await get(api, "/requests", status="PROCESSING_COMPLETE", limit="4")
    status, rest = await get(
        api, "/requests", status="processing_complete", limit="4", cursor=first["nextCursor"]
    )
    assert status == 200, rest
    ids = [r["id"] for r in first["requests"] + rest["requests"]]
    assert len(ids) == len(set(ids)) == 6


async def test_batch_status_filter_accepts_any_case(api: Api) -> None:
    await seed(api)
    for spelling in ("processed", "PROCESSED", "Processed"):
        status, body = await get(api, "/batches", status=spelling)
        assert status == 200, (spelling, body)
        assert [(b["id"], b["status"]) for b in body["batches"]] == [("b1", "processed")]
    assert (await get(api, "/batches", status="IN_PROGRESS"))[1]["batches"] == []


@pytest.mark.parametrize(
    "spelling",
    [
        "done",
        "processing-failed",
        "processing failed",
        "PROCESSİNG_FAILED",  # a Turkish dotted capital I: not the status in any case
        "processing_failed\n",
        "processing_failed ",
        "null",
    ],
)
async def test_a_request_status_that_is_none_in_any_case_is_a_400_listing_the_statuses(
    api: Api, spelling: str
) -> None:
    status, body = await get(api, "/requests", status=spelling)
    assert status == 400
    assert body["error"]["code"] == "invalid_parameter"
    message = body["error"]["message"]
    assert all(s in message for s in REQUEST_STATUSES), message


async def test_a_batch_status_that_is_none_in_any_case_is_a_400_listing_the_statuses(
    api: Api,
) -> None:
    status, body = await get(api, "/batches", status="Bogus")
    assert status == 400
    assert body["error"]["code"] == "invalid_parameter"
    for listed in ("pending", "in_progress", "processed", "cancelling", "expired"):
        assert listed in body["error"]["message"]


def _string_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The string member of a parameter's schema (an optional one is string or null)."""
    return next((m for m in schema.get("anyOf", []) if m.get("type") == "string"), schema)


def test_the_openapi_document_states_that_status_filters_take_any_case() -> None:
    for path, statuses in (
        (f"{BASE}/requests", REQUEST_STATUSES),
        (f"{BASE}/batches", ["pending", "in_progress", "expired"]),
    ):
        params = document()["paths"][path]["get"]["parameters"]
        schema = _string_schema(next(p for p in params if p.get("name") == "status")["schema"])
        assert "any case" in schema["description"]
        pattern = re.compile(schema["pattern"])
        for s in statuses:
            assert pattern.search(s)
            assert pattern.search(s.upper())
            assert pattern.search(s.title())
        assert not pattern.search("done")
        assert not pattern.search(statuses[0] + "\n")
