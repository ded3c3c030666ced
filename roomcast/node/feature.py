"""The contract between the node and a feature.

A feature declares what it takes part in, and the node builds its dispatch
tables from those declarations:

* :meth:`Feature.routes`: the client request types it handles, each with its
  rate class and handler (the session looks the handler up by the request's
  type: no chain of ``isinstance`` tests to keep in step);
* :meth:`Feature.appliers`: the log entry types it applies (the node's log
  codec is built from these, so declaring an entry is all it takes for the
  log to carry it);
* :meth:`Feature.observers`: entry types of other features it follows, called
  after their own applier (so a feature learns what another one did without
  either calling the other);
* its deadlines, what it does when time passes or a connection leaves the
  replica, and its part of a node's snapshot.

Like the core, a feature decides; the node's parts (:class:`NodeParts`) do
the I/O: the outbox sends, the log appends, the store writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from roomcast.clock import Clock
from roomcast.config import Settings
from roomcast.core.engine import ChatEngine
from roomcast.core.limits import MessageClass, RateLimiter
from roomcast.metrics import Metrics
from roomcast.node.connections import ConnectionRegistry, LocalConnection
from roomcast.node.outbox import Outbox
from roomcast.node.room_order import RoomOrder
from roomcast.node.tasks import BackgroundTasks
from roomcast.node.waits import AppliedWaits
from roomcast.ports.broker import Broker, LogEntry, Snapshot
from roomcast.ports.store import Store
from roomcast.protocol import ProtocolError, Request

#: A request handler: done when it returns None, or a coroutine the session
#: awaits before it takes the connection's next frame.
Handler = Callable[[LocalConnection, Any], Coroutine[Any, Any, None] | None]

#: Applies one log entry; the flag says whether this node appended it (the
#: node whose entry it was is the one that writes what it records).
Applier = Callable[[Any, bool], None]


@dataclass(frozen=True, slots=True)
class Route:
    request: type[Request]
    rate: MessageClass
    handle: Handler
    #: Whether a connection whose user is not known yet may send it.
    anonymous: bool = False


@dataclass(slots=True)
class NodeParts:
    """What a feature may use: the node's shared state and its I/O."""

    settings: Settings
    clock: Clock
    store: Store
    broker: Broker
    metrics: Metrics
    engine: ChatEngine
    registry: ConnectionRegistry
    outbox: Outbox
    room_order: RoomOrder
    waits: AppliedWaits
    tasks: BackgroundTasks
    limiter: RateLimiter | None
    #: Re-arm the node's one timer after a deadline may have changed.
    arm_timer: Callable[[], None]

    def append(self, entry: LogEntry) -> None:
        self.broker.append(entry)


class Feature:
    """Base of every feature; each method's default is "takes no part in this"."""

    #: The key of the feature's part of a snapshot.
    name: ClassVar[str]

    def __init__(self, parts: NodeParts) -> None:
        self.parts = parts

    def routes(self) -> Iterable[Route]:
        return ()

    def refuse_own(self, conn_id: str, exc: ProtocolError) -> None:
        """A request entry could not be applied: its sender is told, if it is ours.

        Every replica meets the same refusal at the same point of the log; only
        the node holding the connection answers it.
        """
        conn = self.parts.registry.get(conn_id)
        if conn is not None:
            self.parts.outbox.reply_error(conn, exc)

    def appliers(self) -> Mapping[type[LogEntry], Applier]:
        return {}

    def observers(self) -> Mapping[type[LogEntry], Applier]:
        return {}

    def user_connected(self, conn: LocalConnection) -> asyncio.Future[Any] | None:
        """One of this node's connections is now known to be ``conn.user_id``'s.

        A future returned is what the connection is told first: its requests
        are acted on once it is done.
        """
        return None

    def next_deadline(self) -> float | None:
        return None

    def time_passed(self, at: float, wall: int, appended_here: bool) -> None:
        """The log's clock reached ``at``: end what was due."""

    def connection_leaving(self, conn_id: str, wall: int, appended_here: bool) -> None:
        """A connection is leaving the replica (before its rooms and user are dropped)."""

    def snapshot_part(self) -> Any:
        """This node's share of the feature's state (a msgspec-encodable value), or None."""
        return None

    def restore_part(self, snapshot: Snapshot, part: bytes, appended_here: bool) -> None:
        """Make the replica's picture of ``snapshot.node`` what its part says."""
