"""Presence statuses (online, away, busy) set by users; online and offline follow
their connections (the core's presence book)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from roomcast.core.limits import MessageClass
from roomcast.node.connections import LocalConnection
from roomcast.node.feature import Applier, Feature, NodeParts, Route
from roomcast.ports.broker import LogEntry, Scope, Snapshot, user_scope
from roomcast.protocol import PresenceRequest, ProtocolError, Status


class StatusSet(LogEntry, tag="status", frozen=True, gc=False):
    conn: str
    user: str
    status: Status

    def scope(self) -> Scope:
        return user_scope(self.user)


class StatusPart(msgspec.Struct, frozen=True, gc=False):
    """A node's share of a snapshot: the status of the user of each of its connections."""

    statuses: dict[str, Status]


class PresenceStatus(Feature):
    name = "presence"

    def __init__(self, parts: NodeParts) -> None:
        super().__init__(parts)
        self._part_decoder = msgspec.json.Decoder(StatusPart)

    def routes(self) -> Iterable[Route]:
        return (Route(PresenceRequest, MessageClass.OTHER, self._presence),)

    def appliers(self) -> Mapping[type[LogEntry], Applier]:
        return {StatusSet: self._status_set}

    def _presence(self, conn: LocalConnection, request: PresenceRequest) -> None:
        assert conn.user_id is not None
        self.parts.append(StatusSet(conn.id, conn.user_id, request.status))

    def _status_set(self, entry: StatusSet, appended_here: bool) -> None:
        try:
            deliveries = self.parts.engine.set_status(entry.conn, entry.status)
        except ProtocolError as exc:
            self.refuse_own(entry.conn, exc)
            return
        self.parts.outbox.deliver(deliveries)

    def snapshot_part(self) -> StatusPart:
        engine = self.parts.engine
        statuses: dict[str, Status] = {}
        for conn_id in self.parts.registry.own_ids():
            user_id = engine.user_of(conn_id)
            if user_id is not None:
                statuses[conn_id] = engine.presence.status(user_id)
        return StatusPart(statuses)

    def restore_part(self, snapshot: Snapshot, part: bytes, appended_here: bool) -> None:
        engine = self.parts.engine
        node_of = self.parts.registry.node_of
        for conn_id, status in self._part_decoder.decode(part).statuses.items():
            user_id = engine.user_of(conn_id)
            if user_id is None:
                continue
            # A status is the user's, not the connection's: a node speaks for it
            # only when it holds all of the user's connections (else newer
            # entries win).
            if all(node_of(c) == snapshot.node for c in engine.connections_of(user_id)):
                self.parts.outbox.deliver(engine.set_status(conn_id, status))
