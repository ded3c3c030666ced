"""Which TCP connections the server takes: one count for all, whatever they ask for.

A connection holds a file descriptor from the moment it is accepted, whether
it turns out to be a WebSocket, an HTTP request or nothing at all. So every
accepted connection is counted here, by client address and in all, from
accept to close, and the limits apply to all of them alike: an address that
opens thousands of half-sent HTTP requests is refused just like one that
opens thousands of WebSockets.

The server must always be able to accept a connection in order to refuse
it properly (an HTTP 503 or a WebSocket close 1013 the client understands,
not a connection the kernel resets because the process has no descriptor
left). Its capacity is therefore kept below the process's open-file limit
by a reserve, and a few of the reserved descriptors serve connections being
refused; past those, a connection is dropped at once.

When the server is full, a newcomer may take the place of the connection
that has waited longest without sending a complete request head (a
half-sent request or an idle keep-alive): such connections cost a
descriptor and give nothing, and this keeps the server reachable while
someone holds thousands of them open.

No I/O here: the front door (:mod:`roomcast.transport.front_door`) asks and
acts; the tests drive it directly.
"""

from __future__ import annotations

import resource
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

#: A connection waiting for its request head this long may be displaced by a newcomer.
DISPLACE_AFTER = 1.0


class Waiting(Protocol):
    """A connection that has not sent a complete request head yet."""

    def displace(self) -> None:
        """Drop it to make room for a newcomer."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a connection is refused, in the terms of either protocol."""

    http_status: int
    close_code: int  # for a WebSocket upgrade
    reason: str
    kind: str  # for metrics


SERVER_FULL = Refusal(503, 1013, "the server is full; try again later", "full")
ADDRESS_FULL = Refusal(429, 1008, "too many connections from this address", "address")


def descriptor_limit() -> int:
    """The process's open-file limit, raised to its hard limit where allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # keep what we were given
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class Admission:
    """Counts connections by address and in all; says which may stay."""

    def __init__(self, capacity: int, per_address: int, refusing: int) -> None:
        self.capacity = capacity
        self.per_address = per_address
        self.max_refusing = refusing
        self.open = 0
        self.refusing = 0
        self._by_address: Counter[str] = Counter()
        # Connections without a complete request head, oldest first (dicts keep order).
        self._waiting: dict[Waiting, float] = {}

    @classmethod
    def for_process(
        cls, max_connections: int, per_address: int, reserved: int, limit: int | None = None
    ) -> Admission:
        """Capacity within this process's descriptor limit, less the reserve."""
        limit = descriptor_limit() if limit is None else limit
        capacity = max(1, min(max_connections, limit - reserved))
        return cls(capacity, per_address, max(1, reserved // 2))

    def admit(self, address: str, now: float) -> Refusal | None:
        """Count a new connection from ``address``, or say why it may not stay
        (then :meth:`can_refuse` says whether it may stay long enough to be told)."""
        if self._by_address[address] >= self.per_address:
            return ADDRESS_FULL
        if self.open >= self.capacity and not self._displace_one(now):
            return SERVER_FULL
        self.open += 1
        self._by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        """An admitted connection closed."""
        self.open -= 1
        left = self._by_address[address] - 1
        if left > 0:
            self._by_address[address] = left
        else:
            del self._by_address[address]

    def can_refuse(self) -> bool:
        """Whether a refused connection may be kept long enough to be told why."""
        if self.refusing >= self.max_refusing:
            return False
        self.refusing += 1
        return True

    def refused(self) -> None:
        """A connection being refused is gone."""
        self.refusing -= 1

    def addresses(self) -> int:
        return len(self._by_address)

    # -- connections still without a request head -------------------------------------

    def waiting(self, connection: Waiting, since: float) -> None:
        self._waiting[connection] = since

    def not_waiting(self, connection: Waiting) -> None:
        self._waiting.pop(connection, None)

    def _displace_one(self, now: float) -> bool:
        """Drop the connection that has waited longest for its head, if long enough."""
        for oldest, since in self._waiting.items():
            if now - since < DISPLACE_AFTER:
                return False
            del self._waiting[oldest]
            oldest.displace()  # gives its place back (release) before this returns
            return True
        return False
