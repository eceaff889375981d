"""The schedulers' passes: find the work in the read models, hand it to the use cases."""

from __future__ import annotations

from projections import queries
from projections.queries import Pool
from service.application.batching import Batching
from service.application.polling import Polling
from statemachine.states import ENDED_AT_OPENAI, IN_FLIGHT, SUBMITTING

PENDING_SCAN_LIMIT = 500_000


class CreatorPass:
    """One pass of the batch creator: finish half-submitted batches, plan and submit new ones."""

    def __init__(self, pool: Pool, batching: Batching) -> None:
        self.pool = pool
        self.batching = batching

    async def run_once(self) -> int:
        """Plan from the waiting requests, then submit; returns the batches handled."""
        unfinished = await queries.batches_in(self.pool, SUBMITTING)
        pending = await queries.pending_requests(self.pool, PENDING_SCAN_LIMIT)
        planned = await self.batching.plan([r.request_id for r in pending])
        for bid in dict.fromkeys(unfinished + planned):
            await self.batching.submit(bid)
        return len(planned) + len(unfinished)


class PollerPass:
    """One pass of the poller over every batch that waits on OpenAI or on us."""

    def __init__(self, pool: Pool, polling: Polling) -> None:
        self.pool = pool
        self.polling = polling

    async def run_once(self) -> int:
        """Poll in-flight batches, ingest finished ones, release failed ones; returns work done."""
        work = 0
        for bid in await queries.batches_in(self.pool, IN_FLIGHT):
            work += await self.polling.poll(bid)
        for bid in await queries.batches_in(self.pool, ENDED_AT_OPENAI):
            work += await self.polling.finish(bid)
        return work
