"""Waiting for what a server does in its own time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def eventually_equal(
    probe: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 3.0
) -> None:
    """Poll ``probe`` until it returns ``expected``; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value == expected:
            return
        if time.monotonic() >= deadline:
            assert value == expected
        await asyncio.sleep(0.02)
