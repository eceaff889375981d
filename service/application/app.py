"""Every use case, wired on one ledger and one OpenAI gateway: what entry points call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.application.batching import Batching, CancelSent
from service.application.ingestion import Ingestion
from service.application.ledger import Actor, Ledger
from service.application.polling import Polling
from service.application.requests import Queued, Requeued, queue_requests, requeue_requests
from statemachine.commands import QueueRequest

Companies = frozenset[str] | None


@dataclass
class Application:
    """The application layer as one object: requests, batching, polling, ingestion."""

    ledger: Ledger
    batching: Batching
    ingestion: Ingestion
    polling: Polling

    async def queue(self, commands: Sequence[QueueRequest], actor: Actor) -> Queued:
        """Queue analysis requests, each once (import, the admin API, synthetic data)."""
        return await queue_requests(self.ledger, commands, actor)

    async def requeue(
        self, request_ids: Sequence[str], actor: Actor, *, companies: Companies = None
    ) -> Requeued:
        """An admin sends failed requests of `companies` (None: all) back to waiting."""
        return await requeue_requests(self.ledger, request_ids, actor, companies=companies)

    async def cancel_batch(
        self, batch_id: str, actor: Actor, *, companies: Companies = None
    ) -> CancelSent:
        """An admin cancels a running batch of `companies` (None: all) at OpenAI."""
        return await self.batching.cancel(batch_id, actor, companies=companies)
