"""Room membership of live connections.

A user may be connected several times (tabs, devices). Other members must see
that user join once and leave once, so the registry counts connections per
user per room and reports only the first arrival and the last departure.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Membership:
    """The outcome of a join or leave for the user behind the connection."""

    changed: bool  # the connection's own membership changed
    user_changed: bool  # first connection of the user in / last one out


class RoomRegistry:
    def __init__(self) -> None:
        self._connections: dict[int, set[str]] = {}
        self._rooms_of: dict[str, set[int]] = {}
        self._user_counts: dict[int, dict[str, int]] = {}
        # Rooms closed to new posts (their history stays readable).
        self._archived: set[int] = set()
        # Members removed, by (room, user): the log time of their removal.
        self._removed: dict[tuple[int, str], float] = {}

    def join(self, conn_id: str, user_id: str, room_id: int) -> Membership:
        members = self._connections.setdefault(room_id, set())
        if conn_id in members:
            return Membership(changed=False, user_changed=False)
        members.add(conn_id)
        self._rooms_of.setdefault(conn_id, set()).add(room_id)
        counts = self._user_counts.setdefault(room_id, {})
        counts[user_id] = counts.get(user_id, 0) + 1
        return Membership(changed=True, user_changed=counts[user_id] == 1)

    def leave(self, conn_id: str, user_id: str, room_id: int) -> Membership:
        members = self._connections.get(room_id)
        if members is None or conn_id not in members:
            return Membership(changed=False, user_changed=False)
        members.discard(conn_id)
        rooms = self._rooms_of[conn_id]
        rooms.discard(room_id)
        if not rooms:
            del self._rooms_of[conn_id]
        counts = self._user_counts[room_id]
        counts[user_id] -= 1
        last = counts[user_id] == 0
        if last:
            del counts[user_id]
        if not members:
            del self._connections[room_id]
            del self._user_counts[room_id]
        return Membership(changed=True, user_changed=last)

    def archive(self, room_id: int) -> None:
        self._archived.add(room_id)

    def is_archived(self, room_id: int) -> bool:
        return room_id in self._archived

    #: How far the clocks of two nodes may differ (a join checked this little
    #: after a removal is refused too: the joiner asks again).
    CLOCK_SKEW = 0.25
    #: How long a removal is remembered: longer than any admission check takes
    #: to reach the log (the log's own timeout is far shorter).
    REMOVAL_MEMORY = 60.0

    def removed(self, room_id: int, user_id: str, at: float) -> None:
        """``user_id`` stopped being a member of the room at log time ``at``."""
        for key, when in list(self._removed.items()):
            if when < at - self.REMOVAL_MEMORY:
                del self._removed[key]
        self._removed[(room_id, user_id)] = at

    def readmitted(self, room_id: int, user_id: str) -> None:
        """``user_id`` may be a member again (added back, or unbanned)."""
        self._removed.pop((room_id, user_id), None)

    def removed_after(self, room_id: int, user_id: str, checked_at: float) -> bool:
        """Whether a join whose admission was read at ``checked_at`` may predate
        the user's removal: the removal came later, or too close to tell."""
        at = self._removed.get((room_id, user_id))
        return at is not None and at >= checked_at - self.CLOCK_SKEW

    def rooms_of(self, conn_id: str) -> Set[int]:
        return self._rooms_of.get(conn_id, frozenset())

    def connections(self, room_id: int) -> Set[str]:
        return self._connections.get(room_id, frozenset())

    def users(self, room_id: int) -> Iterable[str]:
        return self._user_counts.get(room_id, {}).keys()

    def has_user(self, room_id: int, user_id: str) -> bool:
        return user_id in self._user_counts.get(room_id, {})

    def has_connection(self, room_id: int, conn_id: str) -> bool:
        return conn_id in self._connections.get(room_id, ())

    def room_count(self) -> int:
        return len(self._connections)
