"""Small helpers for PostgreSQL connection strings."""

from __future__ import annotations


def with_database(dsn: str, name: str) -> str:
    """The same DSN pointing at another database (keeps a `?host=` socket query)."""
    base, _, query = dsn.partition("?")
    head = base.rsplit("/", 1)[0]
    return f"{head}/{name}" + (f"?{query}" if query else "")


def redact(dsn: str) -> str:
    """The DSN with any password replaced, safe to log."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest:
        return dsn
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else dsn
