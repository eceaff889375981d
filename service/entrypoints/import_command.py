"""`batchledger import`: run the importer with a progress bar and print its report."""

from __future__ import annotations

import sys

from eventstore import EventStore, WriterBusy
from eventstore.store import WRITER_LOCK_TIMEOUT
from service import actors
from service.adapters.database import migrate
from service.application.ledger import Actor, Ledger
from service.entrypoints.intake import Importer, ImportReport
from service.entrypoints.runtime import utc_now
from service.ids import uuid7


def print_report(report: ImportReport) -> None:
    """What was queued, skipped, and why rows failed."""
    print(
        f"rows: {report.rows}, queued: {report.queued}, already queued: {report.already_queued},"
        f" failed: {len(report.problems)}"
    )
    for p in report.problems:
        print(f"  line {p.line}: {p.reason}", file=sys.stderr)


async def run_import(
    dsn: str,
    source: str,
    company_id: str,
    model: str,
    *,
    writer_lock_timeout: float = WRITER_LOCK_TIMEOUT,
) -> int:
    """Import `source` for `company_id`; 0 when every row imported, 1 otherwise."""
    from tqdm import tqdm

    await migrate(dsn)  # a first import may come before any `serve` or `migrate`
    store = await EventStore.open(dsn, max_size=4, writer_lock_timeout=writer_lock_timeout)
    bar = tqdm(desc="transcripts", unit="row", disable=not sys.stderr.isatty())
    try:
        importer = Importer(Ledger(store, clock=utc_now, new_id=uuid7), Actor(actors.IMPORT))
        report = await importer.run(source, company_id, model, progress=bar.update)
    except OSError as exc:
        print(f"batchledger import: cannot read {source}: {exc}", file=sys.stderr)
        return 1
    except WriterBusy as exc:
        # Each chunk is one append: those before it are queued, it wrote nothing.
        print(
            f"batchledger import: stopped: {exc}. The rows queued before it stay queued;"
            " run the same import again to queue the rest (nothing is queued twice).",
            file=sys.stderr,
        )
        return 1
    finally:
        bar.close()
        await store.close()
    print_report(report)
    return 1 if report.problems else 0
