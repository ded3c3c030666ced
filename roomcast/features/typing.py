"""Typing indicators: on with ``typing``, off with ``false``, a message, leaving,
or three seconds without a new ``true`` (the core's deadline, passed through
the log so that every node ends it at the same point)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from roomcast.core.limits import MessageClass
from roomcast.node.connections import LocalConnection
from roomcast.node.feature import Applier, Feature, NodeParts, Route
from roomcast.ports.broker import LogEntry, Scope, Snapshot, room_scope
from roomcast.protocol import ProtocolError, TypingRequest


class TypingSet(LogEntry, tag="typing", frozen=True, gc=False):
    conn: str
    room: int
    is_typing: bool
    at: float

    def scope(self) -> Scope:
        return room_scope(self.room)


class TypingPart(msgspec.Struct, frozen=True, gc=False):
    """A node's share of a snapshot: the rooms each of its connections types in."""

    typing: dict[str, tuple[int, ...]]


class TypingIndicators(Feature):
    name = "typing"

    def __init__(self, parts: NodeParts) -> None:
        super().__init__(parts)
        self._part_decoder = msgspec.json.Decoder(TypingPart)

    def routes(self) -> Iterable[Route]:
        return (Route(TypingRequest, MessageClass.TYPING, self._typing),)

    def appliers(self) -> Mapping[type[LogEntry], Applier]:
        return {TypingSet: self._typing_set}

    def _typing(self, conn: LocalConnection, request: TypingRequest) -> None:
        parts = self.parts
        parts.engine.require_member(conn.id, request.room_id, request.TYPE)  # cheap to refuse here
        parts.append(TypingSet(conn.id, request.room_id, request.is_typing, parts.clock.now()))

    def _typing_set(self, entry: TypingSet, appended_here: bool) -> None:
        parts = self.parts
        try:
            deliveries = parts.engine.set_typing(entry.conn, entry.room, entry.is_typing, entry.at)
        except ProtocolError as exc:
            self.refuse_own(entry.conn, exc)
            return
        parts.outbox.deliver(deliveries)
        parts.arm_timer()

    def next_deadline(self) -> float | None:
        return self.parts.engine.next_deadline()

    def time_passed(self, at: float, wall: int, appended_here: bool) -> None:
        self.parts.outbox.deliver(self.parts.engine.expire(at))

    def snapshot_part(self) -> TypingPart:
        typing_rooms = self.parts.engine.typing_rooms
        own = ((c, typing_rooms(c)) for c in self.parts.registry.own_ids())
        return TypingPart({c: rooms for c, rooms in own if rooms})

    def restore_part(self, snapshot: Snapshot, part: bytes, appended_here: bool) -> None:
        engine = self.parts.engine
        for conn_id, rooms in self._part_decoder.decode(part).typing.items():
            for room_id in rooms:
                if engine.is_member(conn_id, room_id):
                    self.parts.outbox.deliver(
                        engine.set_typing(conn_id, room_id, True, snapshot.at)
                    )
