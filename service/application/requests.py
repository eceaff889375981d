"""Use cases on requests: queue (import, API, synthetic data) and an admin's requeue."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from eventstore import ConcurrencyError
from service.application.ledger import Actor, Ledger, Unit
from statemachine.commands import QueueRequest, RequeueRequest
from statemachine.decider import entity_of
from statemachine.request import REQUEST_MACHINE, REQUESTS


class Queued(msgspec.Struct, frozen=True):
    """What queueing did: the requests it created and those that existed already."""

    created: list[str]
    existing: list[str]


class Requeued(msgspec.Struct, frozen=True):
    """What a requeue did, counted as the admin API reports it."""

    requeued: int
    not_found: int
    skipped: int  # exists but is not PROCESSING_FAILED


async def queue_requests(ledger: Ledger, commands: Sequence[QueueRequest], actor: Actor) -> Queued:
    """Queue each request once: the ones whose stream exists already are left as they are.

    One append for all of them; a request that exists turns up as a conflict on its
    stream, is counted as existing and dropped, and the rest are appended again.
    """
    pending = {c.request_id: c for c in commands}
    existing: list[str] = []
    while pending:
        unit = Unit(ledger, actor)
        for rid, command in pending.items():
            unit.decide(REQUESTS, rid, None, command)
        try:
            await unit.commit()
        except ConcurrencyError as exc:
            gone = [
                entity_of(c.stream_id) for c in exc.conflicts if entity_of(c.stream_id) in pending
            ]
            if not gone:
                raise  # a conflict on no stream of this call: never loop on it
            for rid in gone:
                existing.append(rid)
                del pending[rid]
            continue
        break
    return Queued(created=list(pending), existing=existing)


async def requeue_requests(
    ledger: Ledger,
    request_ids: Sequence[str],
    actor: Actor,
    *,
    companies: frozenset[str] | None = None,
) -> Requeued:
    """Send failed requests back to waiting; the others are counted, not touched.

    A request of a company outside `companies` (None: every company) counts as not found.
    """
    ids = list(dict.fromkeys(request_ids))

    async def work(unit: Unit) -> Requeued:
        loaded = {
            rid: r if r is None or companies is None or r.company_id in companies else None
            for rid, r in (await ledger.load_many(REQUESTS, ids)).items()
        }
        command = RequeueRequest()
        failed = {
            rid: r
            for rid, r in loaded.items()
            if r is not None and REQUEST_MACHINE.accepts(r.state, command.trigger, r, command)
        }
        unit.decide_many(REQUESTS, failed, command)
        missing = sum(1 for r in loaded.values() if r is None)
        return Requeued(
            requeued=len(failed), not_found=missing, skipped=len(ids) - missing - len(failed)
        )

    return await ledger.run(actor, work)
