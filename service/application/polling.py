"""Use cases of the poller: observe a batch at OpenAI, then ingest or release it when done."""

from __future__ import annotations

import time
from typing import Any

from service import faults
from service.adapters.openai_gateway import OpenAIGateway, PermanentError, TransientError
from service.application.ingestion import Ingestion
from service.application.ledger import Actor, Ledger
from service.metrics import Metrics
from statemachine.batch import BATCHES
from statemachine.commands import ObserveStatus
from statemachine.errors import InvalidTransition
from statemachine.events import BatchError, BatchEvent, RequestCounts
from statemachine.states import IN_FLIGHT


async def observe_status(
    ledger: Ledger, batch_id: str, observed: ObserveStatus, actor: Actor
) -> list[BatchEvent]:
    """Record what OpenAI reports about a batch; nothing when it shows nothing new.

    Retried on a conflict: an observation is a read at OpenAI, deciding it again is safe.
    """
    return await ledger.execute(BATCHES, batch_id, observed, actor)


class Polling:
    """Observes one batch at OpenAI and finishes it once OpenAI is done with it."""

    def __init__(
        self,
        ledger: Ledger,
        gateway: OpenAIGateway,
        ingestion: Ingestion,
        *,
        actor: Actor,
        log: Any,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.ledger = ledger
        self.gateway = gateway
        self.ingestion = ingestion
        self.actor = actor
        self.log = log
        self.last_poll_seconds = 0.0

    async def poll(self, bid: str) -> int:
        """Retrieve one batch; record a change; finish it when OpenAI is done with it."""
        batch = await self.ledger.load(BATCHES, bid)
        if batch is None or batch.state not in IN_FLIGHT or batch.openai_batch_id is None:
            return 0
        log = self.log.bind(batch_id=bid, openai_batch_id=batch.openai_batch_id)
        started = time.perf_counter()
        try:
            seen = await self.gateway.retrieve(batch.openai_batch_id)
        except (TransientError, PermanentError) as exc:
            log.warning("batch.poll_failed", reason=str(exc)[:300])
            return 0
        self.last_poll_seconds = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.poll_seconds.observe(self.last_poll_seconds)
        counts = seen.request_counts
        errors = (
            [
                BatchError(
                    code=e.code or "unknown", message=e.message or "", line=e.line, param=e.param
                )
                for e in (seen.errors.data or [])
            ]
            if seen.errors
            else []
        )
        observe = ObserveStatus(
            openai_status=seen.status,
            request_counts=RequestCounts(
                total=counts.total, completed=counts.completed, failed=counts.failed
            )
            if counts
            else RequestCounts(),
            output_file_id=seen.output_file_id,
            error_file_id=seen.error_file_id,
            errors=errors,
        )
        try:
            events = await observe_status(self.ledger, bid, observe, self.actor)
        except InvalidTransition as exc:
            log.warning("batch.observation_refused", status=seen.status, reason=str(exc))
            return 0
        if events:
            log.info(
                "batch.observed",
                status=seen.status,
                total=observe.request_counts.total,
                completed=observe.request_counts.completed,
                failed=observe.request_counts.failed,
                seconds=round(self.last_poll_seconds, 3),
            )
        faults.point("poller.after_observe")
        return len(events) + await self.finish(bid)

    async def finish(self, bid: str) -> int:
        """Ingest a completed, expired or cancelled batch; release a failed one."""
        log = self.log.bind(batch_id=bid)
        try:
            result = await self.ingestion.ingest(bid)
            if result is not None:
                if self.metrics is not None:
                    self.metrics.ingest_seconds.observe(result.seconds)
                log.info(
                    "batch.ingested",
                    completed=result.completed,
                    failed=result.failed,
                    missing=result.missing,
                    rejected_lines=len(result.rejected),
                    seconds=round(result.seconds, 3),
                )
                return 1
            released = await self.ingestion.release(bid)
        except (TransientError, PermanentError) as exc:
            log.warning("batch.ingest_deferred", reason=str(exc)[:300])
            return 0
        if released is not None:
            log.info("batch.released", requeued=released[0], failed=released[1])
            return 1
        return 0
