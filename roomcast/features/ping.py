"""The protocol's ``ping``: answered with ``pong`` after everything sent before it.

With entries of this node still on their way through the log, the pong
goes through the log too, so that it follows what they deliver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from roomcast.core.limits import MessageClass
from roomcast.node.connections import LocalConnection
from roomcast.node.feature import Applier, Feature, Route
from roomcast.ports.broker import LogEntry, Scope, user_scope
from roomcast.protocol import PingRequest, Pong


class Pinged(LogEntry, tag="ping", frozen=True, gc=False):
    conn: str
    user: str | None

    def scope(self) -> Scope:
        return user_scope(self.user)


class Ping(Feature):
    name = "ping"

    def routes(self) -> Iterable[Route]:
        return (Route(PingRequest, MessageClass.OTHER, self._ping, anonymous=True),)

    def appliers(self) -> Mapping[type[LogEntry], Applier]:
        return {Pinged: self._pinged}

    def _ping(self, conn: LocalConnection, request: PingRequest) -> None:
        if self.parts.broker.pending() == 0:
            self.parts.outbox.send(conn, Pong())  # nothing of ours in flight: answer now
        else:
            self.parts.append(Pinged(conn.id, conn.user_id))

    def _pinged(self, entry: Pinged, appended_here: bool) -> None:
        conn = self.parts.registry.get(entry.conn)
        if conn is not None:
            self.parts.outbox.send(conn, Pong())
