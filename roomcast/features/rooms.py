"""Rooms: joining and leaving (live presence in a room), creating rooms, backlogs.

A join is applied at one point of the log: this node's connections have had
every message of the room up to that point, and the joiner gets every later
one; with ``since``, what it missed up to that point is read from the
database and sent before them.
"""

from __future__ import annotations

import math
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, NoReturn

import msgspec

from roomcast.core.deliveries import ToConnections
from roomcast.core.limits import CreationLimiter, MessageClass
from roomcast.node.connections import LocalConnection
from roomcast.node.feature import Applier, Feature, NodeParts, Route
from roomcast.ports.broker import CLUSTER, LogEntry, Scope, Snapshot, room_scope, user_scope
from roomcast.ports.store import Room, RoomLimitReached, StoreUnavailable
from roomcast.protocol import (
    CreateRoom,
    ErrorCode,
    HistoryGap,
    JoinRoomRequest,
    LeaveRoomRequest,
    ProtocolError,
    Role,
    RoomCreated,
    RoomInfo,
)


class Joined(LogEntry, tag="join", frozen=True, gc=False):
    conn: str
    room: int
    # The room's last sequence number when the joining node looked it up:
    # where that node starts counting if it has seen no message of the room.
    seq_floor: int = 0
    since: int | None = None
    # Log time when the joiner's admission was read from the store (0: never).
    checked_at: float = 0.0

    def scope(self) -> Scope:
        return room_scope(self.room)


class Left(LogEntry, tag="leave", frozen=True, gc=False):
    """The connection leaves ``room``, or every room it is in (None)."""

    conn: str
    user: str
    room: int | None
    at: float

    def scope(self) -> Scope:
        return user_scope(self.user) if self.room is None else room_scope(self.room)


class RoomAnnounced(LogEntry, tag="room_new", frozen=True, gc=False):
    """A room was created with ``POST /api/rooms``: every node tells its
    connections that may see it. (A room open mode makes for a ``join_room`` of
    an unknown id is not announced: it has no name of its own, and whoever
    joins it knows its id.)"""

    info: RoomInfo
    # The key the HTTP call that created the room waits on, on its node.
    waiter: str = ""

    def scope(self) -> Scope:
        return CLUSTER


class RoomsPart(msgspec.Struct, frozen=True, gc=False):
    """A node's share of a snapshot: the rooms each of its connections is in."""

    rooms: dict[str, tuple[int, ...]]


class Rooms(Feature):
    name = "rooms"

    def __init__(self, parts: NodeParts) -> None:
        super().__init__(parts)
        limiter = parts.limiter
        self.creation_limiter = (
            None if limiter is None else CreationLimiter(limiter.rates[MessageClass.ROOMS])
        )
        self._part_decoder = msgspec.json.Decoder(RoomsPart)

    def routes(self) -> Iterable[Route]:
        return (
            Route(JoinRoomRequest, MessageClass.MEMBERSHIP, self._join),
            Route(LeaveRoomRequest, MessageClass.MEMBERSHIP, self._leave),
        )

    def appliers(self) -> Mapping[type[LogEntry], Applier]:
        return {Joined: self._joined, Left: self._left, RoomAnnounced: self._room_announced}

    # -- joining --------------------------------------------------------------------------

    async def _join(self, conn: LocalConnection, request: JoinRoomRequest) -> None:
        parts = self.parts
        user_id = conn.user_id
        assert user_id is not None
        rooms = parts.engine.rooms.rooms_of(conn.id)
        most = parts.settings.max_rooms_per_connection
        if request.room_id not in rooms and len(rooms) >= most:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"a connection can be in at most {most} rooms", request.TYPE
            )
        checked_at = parts.clock.now()
        room = await self._room_for(request.room_id, user_id, conn.remote)
        await self._admit(room, user_id)
        if conn.ended:  # it went away while the room was looked up
            return
        waiting = parts.waits.expect(conn.id)
        parts.append(Joined(conn.id, room.id, room.last_seq, request.since, checked_at))
        await parts.waits.wait(waiting)

    async def _admit(self, room: Room, user_id: str) -> None:
        """Let ``user_id`` in, or refuse: a private room admits its members; a
        public one anyone not banned, who becomes a member (once); an archived
        room only its members (to read it)."""
        parts = self.parts
        if not room.admits(user_id):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"room {room.id} is private", "join_room")
        if room.archived_at is not None:
            parts.engine.rooms.archive(room.id)  # closed to posts on this node too
            if room.private or (await parts.store.member_state(room.id, user_id)).member:
                return
            raise ProtocolError(ErrorCode.FORBIDDEN, f"room {room.id} is archived", "join_room")
        if room.private:
            return
        state = await parts.store.join_public(room.id, user_id, parts.clock.wall_ms())
        if state.banned:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"you are banned from room {room.id}", "join_room"
            )

    def _joined(self, entry: Joined, appended_here: bool) -> None:
        parts = self.parts
        conn_id, room_id = entry.conn, entry.room
        user_id = parts.engine.user_of(conn_id)
        if user_id is None:  # closed before its join came round
            parts.waits.settle(conn_id)
            return
        if entry.checked_at and parts.engine.rooms.removed_after(
            room_id, user_id, entry.checked_at
        ):
            # The user was removed while this join was on its way: what the
            # store said when it was checked is no longer so. Every replica
            # refuses it at this point of the log; the joiner may ask again.
            refusal = ProtocolError(
                ErrorCode.FORBIDDEN, f"you are no longer a member of room {room_id}", "join_room"
            )
            parts.waits.fail(conn_id, refusal)
            parts.waits.settle(conn_id)
            return
        conn = parts.registry.get(conn_id)
        already = parts.engine.is_member(conn_id, room_id)
        if conn is not None:
            parts.room_order.start(room_id, entry.seq_floor)
        parts.outbox.membership_changed((room_id,))
        parts.outbox.deliver(parts.engine.join(conn_id, room_id))
        if conn is None:
            return
        if entry.since is None or already:
            parts.waits.settle(conn_id)
            return
        # The backlog goes out before anything newer: the room waits for it.
        parts.room_order.pause(room_id)
        parts.tasks.spawn(self._send_backlog(conn, room_id, entry.since))

    async def _send_backlog(self, conn: LocalConnection, room_id: int, since: int) -> None:
        """Read and send what the joiner missed, then let the room's live traffic go on."""
        parts = self.parts
        through = parts.room_order.delivered(room_id)
        try:
            messages, truncated = await parts.store.messages_since(
                room_id, since, through, parts.settings.resume_max_messages
            )
            if not conn.ended and messages:
                if truncated:
                    first = messages[0].message.id
                    parts.outbox.send(conn, HistoryGap(room_id=room_id, since=since, before=first))
                for item in messages:
                    parts.outbox.send(conn, item.message)
        except Exception as exc:
            # Not joined without its backlog: the client is told and may retry.
            parts.waits.fail(conn.id, StoreUnavailable(str(exc)))
            if not conn.ended and conn.user_id is not None:
                parts.append(Left(conn.id, conn.user_id, room_id, parts.clock.now()))
        finally:
            parts.waits.settle(conn.id)
            parts.room_order.resume(room_id)

    # -- leaving ----------------------------------------------------------------------------

    def _leave(
        self, conn: LocalConnection, request: LeaveRoomRequest
    ) -> Coroutine[Any, Any, None] | None:
        parts = self.parts
        assert conn.user_id is not None
        # Leaving waits for the log, so that the next request sees the room left.
        waiting = parts.waits.expect(conn.id)
        parts.append(Left(conn.id, conn.user_id, request.room_id, parts.clock.now()))
        if waiting.done():
            return None
        return parts.waits.wait(waiting)

    def _left(self, entry: Left, appended_here: bool) -> None:
        parts = self.parts
        conn_id = entry.conn
        rooms = list(parts.engine.rooms.rooms_of(conn_id)) if entry.room is None else [entry.room]
        try:
            deliveries = parts.engine.leave(conn_id, entry.room, entry.at)
        except ProtocolError as exc:
            self.refuse_own(conn_id, exc)
            return
        finally:
            parts.waits.settle(conn_id)  # the leave is what this connection awaits
        parts.outbox.membership_changed(rooms)
        parts.outbox.deliver(deliveries)

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot_part(self) -> RoomsPart:
        rooms_of = self.parts.engine.rooms.rooms_of
        return RoomsPart({c: tuple(sorted(rooms_of(c))) for c in self.parts.registry.own_ids()})

    def restore_part(self, snapshot: Snapshot, part: bytes, appended_here: bool) -> None:
        parts = self.parts
        engine = parts.engine
        for conn_id, listed in self._part_decoder.decode(part).rooms.items():
            if engine.user_of(conn_id) is None:
                continue
            present = set(engine.rooms.rooms_of(conn_id))
            for room_id in sorted(set(listed) - present):
                parts.outbox.membership_changed((room_id,))
                parts.outbox.deliver(engine.join(conn_id, room_id))
            for room_id in sorted(present - set(listed)):
                parts.outbox.membership_changed((room_id,))
                parts.outbox.deliver(engine.leave(conn_id, room_id, snapshot.at))

    # -- creating rooms ----------------------------------------------------------------------

    async def _room_for(self, room_id: int, user_id: str, address: str) -> Room:
        parts = self.parts
        room = await parts.store.get_room(room_id)
        if room is not None:
            return room
        if not parts.settings.open_mode:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"room {room_id} does not exist", "join_room")
        # Joining an unknown id creates it, as limited as creating one over HTTP.
        # The tokens are taken only by the joiner that did create it: everyone
        # re-joining at once after a restart has read "no such room" before the
        # first of them created it.
        wait = self._creation_wait(user_id, address)
        if wait:
            room = await parts.store.get_room(room_id)  # created meanwhile?
            if room is not None:
                return room
            self._refuse_creation(wait, "join_room")
        now = parts.clock.wall_ms()
        try:
            room = await parts.store.ensure_room(
                room_id, user_id, now, parts.settings.max_rooms_per_user
            )
        except RoomLimitReached as exc:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"room {room_id} does not exist, and you have created {exc.limit} rooms, "
                "the most a user may",
                "join_room",
            ) from None
        if self.creation_limiter is not None and (room.created_by, room.created_at) == (
            user_id,
            now,
        ):
            self.creation_limiter.take(user_id, address, parts.clock.now())
        return room

    async def create_room(self, user_id: str, address: str, body: CreateRoom) -> Room:
        """``POST /api/rooms``: a new room, within the user's rate and number of rooms.

        The rate is per node; the number of rooms, which the store counts, is
        what holds across a cluster.
        """
        parts = self.parts
        self.check_creation(user_id, address)
        self.charge_creation(user_id, address)
        members = tuple(dict.fromkeys([user_id, *body.members])) if body.private else ()
        try:
            room = await parts.store.create_room(
                body.name,
                body.private,
                members,
                user_id,
                parts.clock.wall_ms(),
                parts.settings.max_rooms_per_user,
            )
        except RoomLimitReached as exc:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"you have created {exc.limit} rooms, the most a user may"
            ) from None
        # Answered once announced here: a client that connects after the answer
        # is not told of a room that was created before it came.
        waiter = parts.waits.key()
        waiting = parts.waits.expect(waiter)
        parts.append(RoomAnnounced(room_info(room), waiter))
        await parts.waits.wait(waiting)
        return room

    def _room_announced(self, entry: RoomAnnounced, appended_here: bool) -> None:
        """``room_created`` to this node's connections whose users the room admits."""
        info, registry = entry.info, self.parts.registry
        if info.private:
            conn_ids = [c for user in info.members for c in registry.own_of_user(user)]
        else:
            conn_ids = [c.id for c in registry.own() if c.user_id is not None]
        if conn_ids:
            self.parts.outbox.deliver((ToConnections(tuple(conn_ids), RoomCreated(info)),))
        if appended_here and entry.waiter:
            self.parts.waits.settle(entry.waiter)

    def check_creation(self, user_id: str, address: str) -> None:
        """Refuse (``rate_limited``) a room the user may not create from ``address`` now."""
        wait = self._creation_wait(user_id, address)
        if wait:
            self._refuse_creation(wait, None)

    def charge_creation(self, user_id: str, address: str) -> None:
        """A room was created: it takes a token of the user's creation rate."""
        if self.creation_limiter is not None:
            self.creation_limiter.take(user_id, address, self.parts.clock.now())

    def _creation_wait(self, user_id: str, address: str) -> float:
        """Seconds until the user may create a room from ``address`` (0: now)."""
        if self.creation_limiter is None:
            return 0.0
        return self.creation_limiter.wait(user_id, address, self.parts.clock.now())

    def _refuse_creation(self, wait: float, request_type: str | None) -> NoReturn:
        self.parts.metrics.rate_limited[MessageClass.ROOMS] += 1
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            "too many rooms created; slow down",
            request_type,
            retry_after_ms=math.ceil(wait * 1000),
        )


def room_info(room: Room, viewer: str | None = None, role: str | None = None) -> RoomInfo:
    """A room for someone it admits (a room list holds only those). A direct
    room is named for ``viewer`` by the other person in it."""
    name = room.name
    if room.direct and viewer is not None:
        others = [m for m in room.members if m != viewer]
        name = others[0] if others else viewer
    return RoomInfo(
        room.id,
        name,
        room.private,
        room.created_by,
        room.created_at,
        list(room.members),
        room.member_count,
        topic=room.topic,
        kind="direct" if room.direct else "room",
        archived_at=room.archived_at,
        role=None if role is None else Role(role),
    )
