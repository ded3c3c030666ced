"""Deliveries out: each event encoded once, handed to the outlet for whoever gets it.

The core decides who is told what (:mod:`roomcast.core.deliveries`); this
resolves rooms and connections to this node's own and counts what goes out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from roomcast.clock import Clock
from roomcast.core.deliveries import Delivery, ToConnections, ToRoom
from roomcast.core.engine import ChatEngine
from roomcast.metrics import Metrics
from roomcast.node.connections import ConnectionRegistry, LocalConnection
from roomcast.ports.outlet import Outlet
from roomcast.protocol import Event, ProtocolError, encode, error_event

log = logging.getLogger("roomcast.node")


class Outbox:
    def __init__(
        self,
        outlet: Outlet,
        engine: ChatEngine,
        registry: ConnectionRegistry,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.outlet = outlet
        self._engine = engine
        self._registry = registry
        self._metrics = metrics
        self._clock = clock

    def encode(self, event: Event) -> bytes:
        """The event as the JSON text every recipient gets."""
        return encode(event, self._clock.wall_ms())

    def send(self, conn: LocalConnection, event: Event) -> None:
        self.outlet.send_text((conn.id,), self.encode(event))

    def deliver(self, deliveries: Iterable[Delivery]) -> None:
        """Send what the core decided to the connections of this node it concerns."""
        out = self._metrics.messages_out
        for delivery in deliveries:
            if isinstance(delivery, ToRoom):
                recipients = len(self._engine.rooms.connections(delivery.room_id))
                if not recipients:
                    continue
                self._metrics.fanout.observe(recipients)
                out[delivery.event.TYPE] += recipients
                self.to_room(delivery.room_id, self.encode(delivery.event), delivery.except_user)
            elif isinstance(delivery, ToConnections):
                local = [c for c in delivery.conn_ids if self._registry.is_own(c)]
                if local:
                    out[delivery.event.TYPE] += len(local)
                    self.outlet.send_text(local, self.encode(delivery.event))

    def to_room(self, room_id: int, payload: bytes, except_user: str | None = None) -> None:
        """An encoded event to this node's members of a room (but ``except_user``'s)."""
        members = self._engine.rooms.connections(room_id)
        if except_user is None:
            self.outlet.send_room_text(room_id, members, payload)
        else:
            skip = set(self._engine.connections_of(except_user))
            self.outlet.send_text([c for c in members if c not in skip], payload)

    def chat(self, room_id: int, payloads: list[bytes]) -> None:
        """Chat messages the room's order released, in order, to this node's members."""
        if not payloads:
            return
        members = self._engine.rooms.connections(room_id)
        self._metrics.messages_out["chat"] += len(members) * len(payloads)
        for payload in payloads:
            self.outlet.send_room_text(room_id, members, payload)

    def membership_changed(self, room_ids: Iterable[int]) -> None:
        for room_id in room_ids:
            self.outlet.membership_changed(room_id)

    def reply_error(self, conn: LocalConnection, exc: ProtocolError) -> None:
        if conn.closing or conn.closed:
            return
        log.info("error conn=%s user=%s code=%s type=%s", conn.id, conn.user_id, exc.code, exc.type)
        self._metrics.errors[exc.code] += 1
        self.send(conn, error_event(exc))
