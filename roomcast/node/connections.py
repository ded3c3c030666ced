"""The connections this node holds, and which node holds every other one.

Centrifuge's ``Hub`` is the model: the node's own sockets by id and by user.
The replica also learns of other nodes' connections from the log; for those
only their node is kept here (the core holds their rooms and users).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False, slots=True)
class LocalConnection:
    """One WebSocket connection held by this node, as the node sees it."""

    id: str
    remote: str
    close: Callable[[int, str], Coroutine[Any, Any, None]]
    abort: Callable[[], None]
    # True once the socket is closing; checked after awaits, since the
    # connection's cleanup waits for a request in flight to finish.
    gone: Callable[[], bool]
    user_id: str | None = None
    closing: bool = False  # a close frame is on its way: nothing more is sent or read
    last_seen: float = 0.0  # loop time of the last frame received (idle detection)
    closed: bool = False
    # What the connection is sent first once its user is known (its unread
    # counts); its requests wait for it, so their answers come after.
    greeting: asyncio.Future[Any] | None = None

    @property
    def ended(self) -> bool:
        """Closing, closed, or its socket already going: nothing more to do for it."""
        return self.closing or self.closed or self.gone()


class ConnectionRegistry:
    """This node's own connections, and the node of every connection the replica knows."""

    def __init__(self) -> None:
        self._own: dict[str, LocalConnection] = {}
        self._own_by_user: dict[str, set[str]] = {}
        self._node_of: dict[str, str] = {}

    # -- this node's own -------------------------------------------------------------

    def add_own(self, conn: LocalConnection) -> None:
        self._own[conn.id] = conn
        if conn.user_id is not None:
            self.own_user(conn)

    def own_user(self, conn: LocalConnection) -> None:
        """The connection's user is known (at once, or from its first request)."""
        assert conn.user_id is not None
        self._own_by_user.setdefault(conn.user_id, set()).add(conn.id)

    def remove_own(self, conn: LocalConnection) -> None:
        self._own.pop(conn.id, None)
        if conn.user_id is not None:
            own = self._own_by_user.get(conn.user_id)
            if own is not None:
                own.discard(conn.id)
                if not own:
                    del self._own_by_user[conn.user_id]

    def get(self, conn_id: str) -> LocalConnection | None:
        """This node's connection ``conn_id``, if it holds it."""
        return self._own.get(conn_id)

    def is_own(self, conn_id: str) -> bool:
        return conn_id in self._own

    def own(self) -> list[LocalConnection]:
        return list(self._own.values())

    def own_ids(self) -> list[str]:
        return list(self._own)

    def own_count(self) -> int:
        return len(self._own)

    def own_of_user(self, user_id: str) -> set[str]:
        return self._own_by_user.get(user_id, set())

    def holds_user(self, user_id: str) -> bool:
        return user_id in self._own_by_user

    # -- every connection of the replica -------------------------------------------

    def place(self, conn_id: str, node: str) -> bool:
        """Record the node of a connection; False if it was known already."""
        if conn_id in self._node_of:
            return False
        self._node_of[conn_id] = node
        return True

    def forget(self, conn_id: str) -> bool:
        """The connection left the replica; False if it was not in it."""
        return self._node_of.pop(conn_id, None) is not None

    def node_of(self, conn_id: str) -> str | None:
        return self._node_of.get(conn_id)

    def in_replica(self, conn_id: str) -> bool:
        return conn_id in self._node_of

    def of_node(self, node: str) -> list[str]:
        """The connections of ``node``, in a stable order."""
        return sorted(c for c, n in self._node_of.items() if n == node)

    def nodes(self) -> set[str]:
        return set(self._node_of.values())
