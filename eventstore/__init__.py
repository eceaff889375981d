"""PostgreSQL event store on asyncpg: append with optimistic concurrency, reads, subscriptions."""

from eventstore.errors import ConcurrencyError, DuplicateEventError, EventStoreError, StreamConflict
from eventstore.migrations import Migration, apply_migrations, load_migrations, pending_migrations
from eventstore.model import EventMetadata, NewEvent, RecordedEvent, StreamAppend, category_of
from eventstore.store import EventStore, init_connection
from eventstore.subscription import Subscription

__all__ = [
    "ConcurrencyError",
    "DuplicateEventError",
    "EventMetadata",
    "EventStore",
    "EventStoreError",
    "Migration",
    "NewEvent",
    "RecordedEvent",
    "StreamAppend",
    "StreamConflict",
    "Subscription",
    "apply_migrations",
    "category_of",
    "init_connection",
    "load_migrations",
    "pending_migrations",
]
