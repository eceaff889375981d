"""The schedulers' passes: find the work in the read models, hand it to the use cases."""

from __future__ import annotations

from functools import partial

from projections import queries
from projections.queries import Pool
from service.application.batching import Batching
from service.application.polling import Polling
from service.entrypoints.isolation import Isolation
from statemachine.states import ENDED_AT_OPENAI, IN_FLIGHT, SUBMITTING


class CreatorPass:
    """One pass of the batch creator: finish half-submitted batches, then plan and submit new
    ones a page at a time, so its memory does not grow with the backlog. A group or a batch
    that fails is logged, backed off and retried alone."""

    def __init__(self, pool: Pool, batching: Batching, isolation: Isolation) -> None:
        self.pool = pool
        self.batching = batching
        self.isolation = isolation

    async def run_once(self) -> int:
        """Submit what a crash left half-submitted, then plan and submit the waiting requests of
        each company and model; returns the batches handled."""
        unfinished = await queries.batches_in(self.pool, SUBMITTING)
        await self._submit(unfinished)
        planned = 0
        for company_id, model in await queries.pending_groups(self.pool):
            plan = partial(self._plan_group, company_id, model)
            key = f"{company_id}/{model}"
            planned += await self.isolation.run(
                "batch.plan", key, plan, company_id=company_id, model=model
            )
        return planned + len(unfinished)

    async def _plan_group(self, company_id: str, model: str) -> int:
        """Plan one company's requests for one model page by page; each page's batches are
        submitted (and their files dropped) before the next page is read."""
        pages, size, after, planned = self.batching.pages(), self.batching.page_size, 0, 0
        while True:
            page = await queries.pending_requests(
                self.pool, company_id, model, after_seq=after, limit=size
            )
            planned += await self._submit(await pages.add([r.request_id for r in page]))
            if len(page) < size:
                return planned + await self._submit(await pages.flush())
            after = page[-1].seq

    async def _submit(self, batch_ids: list[str]) -> int:
        for bid in batch_ids:
            submit = partial(self._submit_one, bid)
            await self.isolation.run("batch.submit", bid, submit, batch_id=bid)
        return len(batch_ids)

    async def _submit_one(self, bid: str) -> int:
        await self.batching.submit(bid)
        return 1


class PollerPass:
    """One pass of the poller over every batch that waits on OpenAI or on us; a batch that
    fails is logged, backed off and retried alone."""

    def __init__(self, pool: Pool, polling: Polling, isolation: Isolation) -> None:
        self.pool = pool
        self.polling = polling
        self.isolation = isolation

    async def run_once(self) -> int:
        """Poll in-flight batches, ingest finished ones, release failed ones; returns work done."""
        work, run = 0, self.isolation.run
        for bid in await queries.batches_in(self.pool, IN_FLIGHT):
            work += await run("batch.poll", bid, partial(self.polling.poll, bid), batch_id=bid)
        for bid in await queries.batches_in(self.pool, ENDED_AT_OPENAI):
            work += await run("batch.finish", bid, partial(self.polling.finish, bid), batch_id=bid)
        return work
