"""Event store: the EventLog port, its PostgreSQL store on asyncpg and an in-memory one."""

from eventstore.errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventStoreError,
    StreamConflict,
    WriterBusy,
)
from eventstore.memory import InMemoryEventStore
from eventstore.migrations import Migration, apply_migrations, load_migrations, pending_migrations
from eventstore.model import EventMetadata, NewEvent, RecordedEvent, StreamAppend, category_of
from eventstore.port import EventLog, WriterLockStats
from eventstore.store import EventStore, init_connection
from eventstore.subscription import Subscription

__all__ = [
    "ConcurrencyError",
    "DuplicateEventError",
    "EventLog",
    "EventMetadata",
    "EventStore",
    "EventStoreError",
    "InMemoryEventStore",
    "Migration",
    "NewEvent",
    "RecordedEvent",
    "StreamAppend",
    "StreamConflict",
    "Subscription",
    "WriterBusy",
    "WriterLockStats",
    "apply_migrations",
    "category_of",
    "init_connection",
    "load_migrations",
    "pending_migrations",
]
