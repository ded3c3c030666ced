"""The chat engine: connections, rooms, presence and typing on one node.

:class:`ChatEngine` is a state machine. The node feeds it what happened
(a connection opened, a request arrived, a message was committed, time
passed) and sends the deliveries it returns. Rules that need stored data
(private rooms, message authors) are checked by the features against the store
before it calls in here; the engine owns the live state only.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from roomcast.core.deliveries import Delivery, ToConnections, ToRoom
from roomcast.core.presence import PresenceBook
from roomcast.core.rooms import RoomRegistry
from roomcast.core.typing import TypingTracker
from roomcast.protocol import (
    ChatMessage,
    ErrorCode,
    Presence,
    ProtocolError,
    RoomUser,
    RoomUsers,
    Status,
    Typing,
    UserJoined,
    UserLeft,
)


class ChatEngine:
    def __init__(self, typing_timeout: float = 3.0, away_after: float = 300.0) -> None:
        self.rooms = RoomRegistry()
        self.presence = PresenceBook(round(away_after * 1000))
        self.typing = TypingTracker(typing_timeout)
        # Which connection last said "typing" for (room, user): when it closes,
        # the indicator ends even if the user is still there on another tab.
        self._typing_conn: dict[tuple[int, str], str] = {}
        self._user_of: dict[str, str | None] = {}
        self._connections_of: dict[str, set[str]] = {}

    # -- connections -----------------------------------------------------------

    def open(self, conn_id: str, user_id: str | None) -> None:
        self._user_of[conn_id] = None
        if user_id is not None:
            self.identify(conn_id, user_id)

    def identify(self, conn_id: str, user_id: str) -> None:
        """Fix the connection's user (once; open mode may learn it late)."""
        if self._user_of[conn_id] is not None:
            raise ValueError(f"connection {conn_id} already belongs to a user")
        self._user_of[conn_id] = user_id
        self._connections_of.setdefault(user_id, set()).add(conn_id)
        self.presence.connect(user_id)

    def user_of(self, conn_id: str) -> str | None:
        return self._user_of.get(conn_id)

    def connections_of(self, user_id: str) -> tuple[str, ...]:
        return tuple(self._connections_of.get(user_id, ()))

    def connection_count(self) -> int:
        return len(self._user_of)

    def close(self, conn_id: str, now: float) -> list[Delivery]:
        """Everything that follows from a connection going away."""
        user_id = self._user_of.pop(conn_id, None)
        if user_id is None:
            return []
        audience = self._audience(user_id)
        deliveries: list[Delivery] = []
        for room_id in sorted(self.rooms.rooms_of(conn_id)):
            if self._typing_conn.get((room_id, user_id)) == conn_id:
                deliveries.extend(self._stop_typing(room_id, user_id))
        deliveries += self._leave_rooms(conn_id, user_id, list(self.rooms.rooms_of(conn_id)), now)
        conns = self._connections_of[user_id]
        conns.discard(conn_id)
        if not conns:
            del self._connections_of[user_id]
        if self.presence.disconnect(user_id):
            audience -= {conn_id}
            if audience:
                deliveries.append(
                    ToConnections(tuple(audience), Presence(user_id=user_id, status="offline"))
                )
        return deliveries

    # -- rooms -----------------------------------------------------------------

    def join(self, conn_id: str, room_id: int) -> list[Delivery]:
        user_id = self._known_user(conn_id)
        membership = self.rooms.join(conn_id, user_id, room_id)
        deliveries: list[Delivery] = []
        if membership.user_changed:
            deliveries.append(
                ToRoom(room_id, UserJoined(room_id=room_id, user_id=user_id), except_user=user_id)
            )
        deliveries.append(ToConnections((conn_id,), self.room_users(room_id)))
        return deliveries

    def leave(self, conn_id: str, room_id: int | None, now: float) -> list[Delivery]:
        user_id = self._known_user(conn_id)
        if room_id is None:
            rooms = list(self.rooms.rooms_of(conn_id))
        elif self.rooms.has_connection(room_id, conn_id):
            rooms = [room_id]
        else:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"not in room {room_id}", "leave_room")
        return self._leave_rooms(conn_id, user_id, rooms, now)

    def _leave_rooms(
        self, conn_id: str, user_id: str, rooms: Iterable[int], now: float
    ) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for room_id in sorted(rooms):
            if self._typing_conn.get((room_id, user_id)) == conn_id:
                # Its "typing" goes with it; another tab of the user types anew.
                deliveries.extend(self._stop_typing(room_id, user_id))
            if self.rooms.leave(conn_id, user_id, room_id).user_changed:
                deliveries.extend(self._stop_typing(room_id, user_id))
                deliveries.append(ToRoom(room_id, UserLeft(room_id=room_id, user_id=user_id)))
        return deliveries

    def is_member(self, conn_id: str, room_id: int) -> bool:
        return self.rooms.has_connection(room_id, conn_id)

    def room_users(self, room_id: int) -> RoomUsers:
        users = [self.room_user(user) for user in sorted(self.rooms.users(room_id))]
        return RoomUsers(room_id=room_id, users=users)

    def room_user(self, user_id: str) -> RoomUser:
        seen = self.presence.view(user_id)
        if seen is None:
            return RoomUser(user_id=user_id, status="offline")
        return RoomUser(user_id, seen.status, seen.text, seen.last_active)

    def room_users_page(
        self, room_id: int, after: str | None, limit: int
    ) -> tuple[list[RoomUser], bool]:
        """Up to ``limit`` of the room's users after ``after``, by user id, and
        whether more follow: the cost of a page grows with the room's size, not
        with its square (only the page is sorted)."""
        users = self.rooms.users(room_id)
        candidates = users if after is None else (user for user in users if user > after)
        chosen = heapq.nsmallest(limit + 1, candidates)
        page = [self.room_user(user) for user in chosen]
        return page[:limit], len(page) > limit

    def appears_offline(self, user_id: str) -> bool:
        return self.presence.status(user_id) == "offline"

    def shares_room(self, user_a: str, user_b: str) -> bool:
        for conn_id in self._connections_of.get(user_a, ()):
            for room_id in self.rooms.rooms_of(conn_id):
                if self.rooms.has_user(room_id, user_b):
                    return True
        return False

    # -- chat, typing, presence --------------------------------------------------

    def require_member(self, conn_id: str, room_id: int, request_type: str) -> str:
        """The connection's user, if the connection is in the room; else forbidden.

        Membership is checked first: on a cluster node the replica may not have
        applied a brand-new connection yet, and its request must still get the
        answer that is true either way (a member's join came after its opening
        in the log, so a member's user is always known).
        """
        if not self.rooms.has_connection(room_id, conn_id):
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"not a member of room {room_id}", request_type
            )
        if self.rooms.is_archived(room_id):
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"room {room_id} is archived: nothing new can be posted",
                request_type,
            )
        return self._known_user(conn_id)

    def message_stored(self, message: ChatMessage) -> list[Delivery]:
        """A chat message is committed: it ends its author's typing (returned here)
        and any automatic away.

        The message itself is sent by the caller, in its room's sequence order.
        Sending is activity: an author who was away by themselves is back.
        """
        user_id = message.user_id
        back = self.presence.active(user_id, message.created_at)
        if not self.typing.is_typing((message.room_id, user_id)):
            return self._presence_of(user_id) if back else []  # the usual case, kept cheap
        ended = self._stop_typing(message.room_id, user_id)
        return ended + self._presence_of(user_id) if back else ended

    def set_typing(self, conn_id: str, room_id: int, is_typing: bool, now: float) -> list[Delivery]:
        user_id = self.require_member(conn_id, room_id, "typing")
        if not is_typing:
            return self._stop_typing(room_id, user_id)
        self._typing_conn[(room_id, user_id)] = conn_id
        if not self.typing.start((room_id, user_id), now):
            return []
        return [ToRoom(room_id, Typing(room_id=room_id, user_id=user_id, is_typing=True), user_id)]

    def typing_rooms(self, conn_id: str) -> tuple[int, ...]:
        """Rooms where this connection's ``typing: true`` is the one in force."""
        return tuple(
            sorted(room for (room, _), conn in self._typing_conn.items() if conn == conn_id)
        )

    def _stop_typing(self, room_id: int, user_id: str) -> list[Delivery]:
        self._typing_conn.pop((room_id, user_id), None)
        if not self.typing.stop((room_id, user_id)):
            return []
        return [ToRoom(room_id, Typing(room_id=room_id, user_id=user_id, is_typing=False), user_id)]

    def expire(self, now: float) -> list[Delivery]:
        """Typing indicators whose 3 s passed without a new ``true`` end here."""
        expired = self.typing.expire(now)
        for key in expired:
            self._typing_conn.pop(key, None)
        return [
            ToRoom(room_id, Typing(room_id=room_id, user_id=user_id, is_typing=False), user_id)
            for room_id, user_id in expired
        ]

    def next_deadline(self) -> float | None:
        return self.typing.next_deadline()

    def set_status(
        self, conn_id: str, status: Status, text: str | None = None, until: int | None = None
    ) -> list[Delivery]:
        user_id = self._known_user(conn_id)
        if not self.presence.choose(user_id, status, text, until):
            return []
        return self._presence_of(user_id)

    def active(self, user_id: str, wall: int, shown: bool = True) -> list[Delivery]:
        """Activity of the user (a message, a client's ``activity``; a new
        connection, not ``shown``) at ``wall``."""
        changed = self.presence.active(user_id, wall, shown)
        return self._presence_of(user_id) if changed else []

    def restore_activity(
        self, user_id: str, last_active: int | None, idle_since: int | None, away: bool
    ) -> list[Delivery]:
        """A snapshot's word on the user's activity."""
        changed = self.presence.restore(user_id, last_active, idle_since, away)
        return self._presence_of(user_id) if changed else []

    def presence_due(self, wall: int) -> list[Delivery]:
        """Statuses that changed by themselves at ``wall``."""
        return [d for user in self.presence.time_passed(wall) for d in self._presence_of(user)]

    def _presence_of(self, user_id: str) -> list[Delivery]:
        seen = self.room_user(user_id)
        event = Presence(user_id, seen.status, seen.status_text, seen.last_active_at)
        return [ToConnections(tuple(self._audience(user_id)), event)]

    def _audience(self, user_id: str) -> set[str]:
        """Connections of every user sharing a room with ``user_id``, and their own."""
        audience: set[str] = set(self._connections_of.get(user_id, ()))
        for conn_id in tuple(audience):
            for room_id in self.rooms.rooms_of(conn_id):
                audience.update(self.rooms.connections(room_id))
        return audience

    def _known_user(self, conn_id: str) -> str:
        user_id = self._user_of.get(conn_id)
        if user_id is None:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "no user is known for this connection")
        return user_id
