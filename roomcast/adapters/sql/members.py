"""Membership: who belongs to a room with which role, bans, and the room's own
settings (name, topic, private, archived) that its owners and moderators change.

A change that must leave the room with an owner reads and writes under the
room row's lock (PostgreSQL's ``FOR UPDATE``; SQLite has one writer), so two
nodes demoting the last two owners at once cannot both succeed.
"""

from __future__ import annotations

from roomcast.adapters.sql.conversations import START_READ
from roomcast.adapters.sql.dialect import Dialect
from roomcast.adapters.sql.steps import Steps
from roomcast.ports.store import Member, MemberChange, MemberState


class MemberSQL:
    def __init__(self, dialect: Dialect) -> None:
        sql = dialect.sql
        order = f"user_id{dialect.code_point_order}"
        self._state = sql(
            "SELECT (SELECT role FROM room_members WHERE room_id = $1 AND user_id = $2), "
            "(SELECT joined_at FROM room_members WHERE room_id = $1 AND user_id = $2), "
            "EXISTS (SELECT 1 FROM room_bans WHERE room_id = $1 AND user_id = $2)"
        )
        self._page = sql(
            "SELECT user_id, role, joined_at FROM room_members "
            # The cursor compares as the order sorts (PostgreSQL's default
            # collation would not: a page after "Zed" must still hold "adam").
            f"WHERE room_id = $1 AND {order} > $2 ORDER BY {order} LIMIT $3"
        )
        self._first_page = sql(
            "SELECT user_id, role, joined_at FROM room_members "
            f"WHERE room_id = $1 ORDER BY {order} LIMIT $2"
        )
        self._insert = sql(
            "INSERT INTO room_members (room_id, user_id, role, joined_at, read_id) "
            f"VALUES ($1, $2, $3, $4, {START_READ}) ON CONFLICT DO NOTHING RETURNING user_id"
        )
        self._delete = sql("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
        # A member who leaves takes the room's notifications along: back later,
        # they start with nothing unread, as any new member.
        self._forget_notifications = sql(
            "DELETE FROM notifications WHERE room_id = $1 AND user_id = $2"
        )
        self._set_role = sql(
            "UPDATE room_members SET role = $3 WHERE room_id = $1 AND user_id = $2"
        )
        self._owners = sql(
            "SELECT COUNT(*) FROM room_members WHERE room_id = $1 AND role = 'owner'"
        )
        self._lock = sql(f"SELECT id FROM rooms WHERE id = $1{dialect.row_lock}")
        self._ban = sql(
            "INSERT INTO room_bans (room_id, user_id, banned_by, banned_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
        )
        self._unban = sql(
            "DELETE FROM room_bans WHERE room_id = $1 AND user_id = $2 RETURNING user_id"
        )

    def state(self, room_id: int, user_id: str) -> Steps[MemberState]:
        row = (yield (self._state, (room_id, user_id)))[0]
        member = None if row[0] is None else Member(user_id, row[0], row[1])
        return MemberState(member, bool(row[2]))

    def page(self, room_id: int, after: str | None, limit: int) -> Steps[list[Member]]:
        if after is None:
            rows = yield (self._first_page, (room_id, limit))
        else:
            rows = yield (self._page, (room_id, after, limit))
        return [Member(row[0], row[1], row[2]) for row in rows]

    def join(self, room_id: int, user_id: str, now: int) -> Steps[MemberState]:
        """A public room's ``join_room``: a member from the first one on, unless banned.

        Under the room's lock, as a ban is: a join and a ban at the same moment
        cannot leave the user both a member and banned.
        """
        yield (self._lock, (room_id,))
        state = yield from self.state(room_id, user_id)
        if state.member is not None or state.banned:
            return state
        yield (self._insert, (room_id, user_id, "member", now))
        return (yield from self.state(room_id, user_id))

    def add(self, room_id: int, user_id: str, role: str, now: int) -> Steps[MemberChange]:
        """Add a member (lifting a ban: adding someone is letting them in)."""
        yield (self._lock, (room_id,))
        yield (self._unban, (room_id, user_id))
        added = yield (self._insert, (room_id, user_id, role, now))
        state = yield from self.state(room_id, user_id)
        return MemberChange(bool(added), state.member)

    def remove(
        self, room_id: int, user_id: str, ban_by: str | None, now: int
    ) -> Steps[MemberChange]:
        """Remove a member (and, with ``ban_by``, ban them): refused for the last owner."""
        yield (self._lock, (room_id,))
        state = yield from self.state(room_id, user_id)
        member = state.member
        if member is not None and member.role == "owner" and (yield from self._lone_owner(room_id)):
            return MemberChange(False, member, last_owner=True)
        if state.member is not None:
            yield (self._delete, (room_id, user_id))
            yield (self._forget_notifications, (room_id, user_id))
        if ban_by is not None:
            yield (self._ban, (room_id, user_id, ban_by, now))
        return MemberChange(state.member is not None or ban_by is not None, state.member)

    def unban(self, room_id: int, user_id: str) -> Steps[bool]:
        return bool((yield (self._unban, (room_id, user_id))))

    def set_role(self, room_id: int, user_id: str, role: str) -> Steps[MemberChange]:
        """Change a member's role: refused when it would leave the room without an owner."""
        yield (self._lock, (room_id,))
        state = yield from self.state(room_id, user_id)
        if state.member is None:
            return MemberChange(False, None)
        if (
            state.member.role == "owner"
            and role != "owner"
            and (yield from self._lone_owner(room_id))
        ):
            return MemberChange(False, state.member, last_owner=True)
        yield (self._set_role, (room_id, user_id, role))
        changed = Member(user_id, role, state.member.joined_at)
        return MemberChange(state.member.role != role, changed)

    def _lone_owner(self, room_id: int) -> Steps[bool]:
        """Whether the room has one owner at most (read under the room's lock)."""
        return bool((yield (self._owners, (room_id,)))[0][0] <= 1)
