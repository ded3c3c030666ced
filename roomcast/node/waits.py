"""Local connections waiting for one of their own log entries to be applied.

``join_room`` and ``leave_room`` answer only once the log has applied them,
so that the connection's next request sees the room joined or left.
"""

from __future__ import annotations

import asyncio
import itertools

from roomcast.ports.store import StoreUnavailable


class AppliedWaits:
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._keys = itertools.count(1)

    def key(self) -> str:
        """A key of its own for a wait that is not a connection's (an HTTP call's)."""
        return f"call:{next(self._keys)}"

    def expect(self, conn_id: str) -> asyncio.Future[None]:
        """A future settled when this connection's next awaited entry is applied."""
        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[conn_id] = waiting
        return waiting

    def settle(self, conn_id: str) -> None:
        """The connection's awaited entry has been applied (or it is gone)."""
        waiting = self._waiting.pop(conn_id, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def fail(self, conn_id: str, exc: Exception) -> None:
        waiting = self._waiting.get(conn_id)
        if waiting is not None and not waiting.done():
            waiting.set_exception(exc)

    async def wait(self, waiting: asyncio.Future[None]) -> None:
        """Wait for the entry; bounded, so that a lost entry cannot keep a
        connection's handler (and its cleanup) waiting forever."""
        try:
            await asyncio.wait_for(asyncio.shield(waiting), self._timeout)
        except TimeoutError:
            raise StoreUnavailable("the cluster's log did not apply the request in time") from None
