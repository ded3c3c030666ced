"""Time and new ids, in one object the node is given.

Every time that goes into a log entry or a record, and every id the node
makes, comes from here, so that a test can hand the node a clock it controls.
"""

from __future__ import annotations

import time
import uuid


def wall_ms() -> int:
    """Milliseconds since the epoch (what clients and records see)."""
    return time.time_ns() // 1_000_000


class Clock:
    """The wall clock and uuid4 ids; subclass it to control time in tests."""

    def wall_ms(self) -> int:
        return wall_ms()

    def now(self) -> float:
        """Seconds on the wall clock: deadlines in log entries must mean the same
        on every node, so they are not taken from a process's monotonic clock."""
        return time.time()

    def new_id(self) -> str:
        return uuid.uuid4().hex
