"""Who writes events: the system's own actors, and how a token's name appears as an actor."""

from __future__ import annotations

BATCH_CREATOR = "batch-creator"
BATCH_POLLER = "batch-poller"
IMPORT = "import"
DEMO_IMPORT = "demo-import"
CLI = "cli"
SYNTHETIC = "scheduler"
SYSTEM = "system"

SYSTEM_ACTORS = frozenset(
    {BATCH_CREATOR, BATCH_POLLER, IMPORT, DEMO_IMPORT, CLI, SYNTHETIC, SYSTEM}
)
"""Reserved: no token may be named like one of these, in any case."""

TOKEN_PREFIX = "token:"  # noqa: S105 -- a label, not a secret


def token_actor(name: str) -> str:
    """The actor a token's writes record: `token:<name>`, never mistaken for a system actor."""
    return f"{TOKEN_PREFIX}{name}"
