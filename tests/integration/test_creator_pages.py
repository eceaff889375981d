"""The batch creator works in pages: what a pass holds does not grow with the backlog."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest

from eventstore import EventStore, RecordedEvent
from projections.registry import all_projections
from projections.runner import ProjectionRunner
from service.adapters.openai_gateway import OpenAIGateway
from service.application.batching import Batching, Candidate, chunk, jsonl_line
from service.application.ledger import Actor
from service.entrypoints.isolation import Backoff, Isolation
from service.entrypoints.jobs import CreatorPass
from service.logs import get_logger
from service.tools.synthetic import ledger, queue_many
from statemachine.batch import BATCHES
from statemachine.events import BatchFileUploaded, BatchPlanned
from statemachine.request import Request

TRANSCRIPT = "[01.10.2026 09:00:00] User: Can I swap my Friday shift? Thanks"
GROUPS = {("acme", "gpt-4o"): 45, ("acme", "gpt-4o-mini"): 130, ("globex", "gpt-4o-mini"): 70}


class CountingStore(EventStore):
    """The PostgreSQL store, noting the streams each read asks for, and the files the
    creator's cache holds at each read and at each commit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[int] = []
        self.cached_at_read: list[int] = []
        self.cached_at_commit: list[int] = []
        self.cached: Callable[[], int] = lambda: 0

    def reset(self) -> None:
        self.reads.clear()
        self.cached_at_read.clear()
        self.cached_at_commit.clear()

    async def read_streams(self, stream_ids: Any) -> dict[str, list[RecordedEvent]]:
        self.reads.append(len(stream_ids))
        self.cached_at_read.append(self.cached())
        return await super().read_streams(stream_ids)

    async def append_many(self, appends: Any, **kwargs: Any) -> int:
        self.cached_at_commit.append(self.cached())
        return await super().append_many(appends, **kwargs)


@pytest.fixture
async def store(db_dsn: str) -> AsyncIterator[CountingStore]:
    es = await CountingStore.open(db_dsn, max_size=4)
    assert isinstance(es, CountingStore)
    yield es
    await es.close()


def creator(
    store: CountingStore,
    client: openai.AsyncOpenAI,
    *,
    page_size: int,
    max_requests: int = 50,
    max_bytes: int = 100_000_000,
    prefix: str = "b",
) -> CreatorPass:
    """A creator pass on the counting store, with its own batch ids."""
    numbers = itertools.count(1)
    batching = Batching(
        ledger(store),
        OpenAIGateway(client),
        max_requests=max_requests,
        max_bytes=max_bytes,
        actor=Actor("batch-creator"),
        log=get_logger("test"),
        new_batch_id=lambda: f"{prefix}{next(numbers)}",
        page_size=page_size,
    )
    store.cached = lambda: len(batching._files)
    return CreatorPass(store.pool, batching, loud_isolation())


def loud_isolation() -> Isolation:
    """Item isolation that lets a test's failure through (its traceback chained) instead of
    logging and backing off."""

    def crashed(step: str) -> None:
        raise AssertionError(f"{step} raised in a test")

    return Isolation(Backoff(), get_logger("test"), on_failure=crashed)


async def queue_groups(store: EventStore) -> dict[tuple[str, str], list[str]]:
    """GROUPS' requests, queued interleaved (so seq order mixes groups), projections caught up."""
    queued: dict[tuple[str, str], list[str]] = {key: [] for key in GROUPS}
    for n in range(0, max(GROUPS.values()), 10):
        for (company, model), size in GROUPS.items():
            if n < size:
                queued[(company, model)] += await queue_many(
                    ledger(store),
                    min(10, size - n),
                    company=company,
                    model=model,
                    prefix=f"{company}-{model}-{n}-",
                    transcript=TRANSCRIPT,
                )
    await catch_up(store)
    return queued


async def catch_up(store: EventStore) -> None:
    for projection in all_projections().values():
        await ProjectionRunner(store, projection).catch_up()


async def batch_events(store: EventStore, kind: type[Any]) -> list[Any]:
    recorded = await store.read_all(0, 100_000, types=[kind.__name__])
    return [BATCHES.decode(e.data) for e in recorded]


def expected_sizes(ids: list[str], model: str, max_requests: int, max_bytes: int) -> list[int]:
    """Batch sizes of one group split in one piece (no pages) by the batching rule."""
    candidates = [
        Candidate(
            Request(request_id=rid, company_id="-", session_id="-", model=model),
            jsonl_line(rid, model, TRANSCRIPT),
        )
        for rid in ids
    ]
    return [len(part) for part in chunk(candidates, max_requests, max_bytes)]


async def test_a_pass_plans_every_waiting_request_once_reading_at_most_a_page_of_streams(
    store: CountingStore, client: openai.AsyncOpenAI
) -> None:
    queued = await queue_groups(store)
    store.reset()
    handled = await creator(store, client, page_size=20).run_once()
    planned: list[BatchPlanned] = await batch_events(store, BatchPlanned)
    assert handled == len(planned)
    everyone = [rid for b in planned for rid in b.request_ids]
    assert sorted(everyone) == sorted(rid for ids in queued.values() for rid in ids)
    assert len(everyone) == len(set(everyone))
    # Pages of 20 of each company and model in turn: 45, 130 and 70 requests.
    assert store.reads == [20, 20, 5] + [20] * 6 + [10] + [20, 20, 20, 10]
    for b in planned:
        assert b.request_ids[0] in queued[(b.company_id, b.model)]
        assert set(b.request_ids) <= set(queued[(b.company_id, b.model)])
    assert len(await batch_events(store, BatchFileUploaded)) == len(planned)


async def test_a_batch_left_open_at_a_page_boundary_is_filled_from_the_next_page(
    store: CountingStore, client: openai.AsyncOpenAI
) -> None:
    queued = await queue_groups(store)
    await creator(store, client, page_size=20, max_requests=50).run_once()
    planned: list[BatchPlanned] = await batch_events(store, BatchPlanned)
    sizes = {
        key: [len(b.request_ids) for b in planned if (b.company_id, b.model) == key]
        for key in GROUPS
    }
    # 20-request pages, 50-request batches: full batches except each group's last.
    assert sizes == {
        ("acme", "gpt-4o"): [45],
        ("acme", "gpt-4o-mini"): [50, 50, 30],
        ("globex", "gpt-4o-mini"): [50, 20],
    }
    for b in planned:  # oldest first, in the order they were queued
        assert b.request_ids == [
            rid for rid in queued[(b.company_id, b.model)] if rid in b.request_ids
        ]


async def test_batches_planned_across_pages_split_at_the_byte_limit_as_without_pages(
    store: CountingStore, client: openai.AsyncOpenAI
) -> None:
    queued = await queue_groups(store)
    max_bytes = 7 * len(jsonl_line("acme-gpt-4o-mini-0-0", "gpt-4o-mini", TRANSCRIPT))
    await creator(store, client, page_size=5, max_requests=1000, max_bytes=max_bytes).run_once()
    planned: list[BatchPlanned] = await batch_events(store, BatchPlanned)
    uploaded: list[BatchFileUploaded] = await batch_events(store, BatchFileUploaded)
    assert len(uploaded) == len(planned)
    assert max(u.bytes for u in uploaded) <= max_bytes
    for (company, model), ids in queued.items():
        ours = [len(b.request_ids) for b in planned if (b.company_id, b.model) == (company, model)]
        assert ours == expected_sizes(ids, model, 1000, max_bytes)


async def test_the_file_cache_holds_one_page_of_batches_and_is_empty_when_a_page_is_read(
    store: CountingStore, client: openai.AsyncOpenAI
) -> None:
    await queue_groups(store)
    store.reset()
    await creator(store, client, page_size=10, max_requests=15).run_once()
    # Every page's batches went to OpenAI (and their files were dropped) before the next read.
    assert len(store.cached_at_read) == 5 + 13 + 7  # pages of 45, 130 and 70
    assert set(store.cached_at_read) == {0}
    # A 10-request page closes at most one 15-request batch: only its file is ever cached.
    assert max(store.cached_at_commit) == 1
    assert len(await batch_events(store, BatchFileUploaded)) == len(
        await batch_events(store, BatchPlanned)
    )


async def test_requests_batched_meanwhile_by_another_instance_are_skipped_not_batched_twice(
    store: CountingStore, client: openai.AsyncOpenAI
) -> None:
    queued = await queue_groups(store)
    mini = queued[("acme", "gpt-4o-mini")]
    taken = [mini[3], mini[47], mini[100]]
    other = creator(store, client, page_size=20, prefix="other-")
    assert len(await other.batching.plan(taken)) == 1  # the projection has not seen it yet
    ours = creator(store, client, page_size=20)
    await ours.run_once()
    planned: list[BatchPlanned] = await batch_events(store, BatchPlanned)
    everyone = [rid for b in planned for rid in b.request_ids]
    assert len(everyone) == len(set(everyone)) == sum(GROUPS.values())
    (theirs,) = [b for b in planned if b.batch_id.startswith("other-")]
    assert theirs.request_ids == taken
