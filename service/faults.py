"""Fault points for crash tests: an armed point exits the process hard (BATCHLEDGER_FAULTS).

`os._exit` skips every finally block and flushes nothing, like SIGKILL: the test then
restarts the process and checks that nothing was lost or done twice.
"""

from __future__ import annotations

import os

FAULT_EXIT_CODE = 86


def point(name: str) -> None:
    """Exit now if this point is armed (BATCHLEDGER_FAULTS=name1,name2)."""
    armed = os.environ.get("BATCHLEDGER_FAULTS")
    if armed and name in armed.split(","):
        os._exit(FAULT_EXIT_CODE)
