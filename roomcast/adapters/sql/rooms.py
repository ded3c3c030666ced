"""Rooms: reading, creating (numbered, and counted against their creator) and listing."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from roomcast.adapters.sql.conversations import START_READ
from roomcast.adapters.sql.dialect import Dialect
from roomcast.adapters.sql.rules import creation_limit, direct_key, name_key, room_number
from roomcast.adapters.sql.steps import Many, Row, Steps
from roomcast.ports.store import Room


class RoomSQL:
    """A room read with its members reads them in its own row where the engine
    has arrays (one round trip), else with a second query."""

    def __init__(self, dialect: Dialect) -> None:
        sql = dialect.sql
        self._dialect = dialect
        order = f"user_id{dialect.code_point_order}"
        #: The last column counts a room's members (an index range of room_members).
        columns = (
            f"id, name, private, created_by, created_at, {dialect.room_last_seq}, "
            "(SELECT COUNT(*) FROM room_members WHERE room_members.room_id = rooms.id), "
            "topic, kind, archived_at"
        )

        def members(limit: str) -> str:
            return (
                ", ARRAY(SELECT user_id FROM room_members "
                f"WHERE room_members.room_id = rooms.id ORDER BY {order}{limit})"
            )

        with_members = members("") if dialect.arrays else ""
        self._room = sql(f"SELECT {columns}{with_members} FROM rooms WHERE id = $1")
        self._members = sql(
            f"SELECT room_id, user_id FROM room_members WHERE room_id = $1 ORDER BY {order}"
        )
        belongs = "id IN (SELECT room_id FROM room_members WHERE user_id = $1)"
        visible = {
            False: f"SELECT {columns}{{}} FROM rooms WHERE (private = 0 OR {belongs}) AND id > $2 ",
            True: f"SELECT {columns}{{}} FROM rooms WHERE {belongs} AND id > $2 ",
        }
        match = f"AND {dialect.contains(dialect.ascii_lower('name'), '$4')} "
        #: By whether a name filter ($4) is given and whether only the user's own
        #: rooms are listed; the members limit comes after the filter.
        self._listing = {
            (named, mine): sql(
                visible[mine].format(
                    members(f" LIMIT ${5 if named else 4}") if dialect.arrays else ""
                )
                + (match if named else "")
                + "ORDER BY id LIMIT $3"
            )
            for named in (False, True)
            for mine in (False, True)
        }
        self._insert = sql(
            "INSERT INTO rooms (id, name, private, created_by, created_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING RETURNING id"
        )
        self._delete = sql("DELETE FROM rooms WHERE id = $1")
        self._add_member = sql(
            "INSERT INTO room_members (room_id, user_id, role, joined_at, read_id) "
            f"VALUES ($1, $2, $3, $4, {START_READ}) ON CONFLICT DO NOTHING"
        )
        self._update = sql(
            "UPDATE rooms SET name = COALESCE($2, name), topic = COALESCE($3, topic), "
            "private = COALESCE($4, private) WHERE id = $1 AND archived_at IS NULL "
            "RETURNING id"
        )
        self._archive = sql(
            "UPDATE rooms SET archived_at = $2 WHERE id = $1 AND archived_at IS NULL RETURNING id"
        )
        self._direct = sql("SELECT id FROM rooms WHERE direct_key = $1")
        self._insert_direct = sql(
            "INSERT INTO rooms (id, name, private, created_by, created_at, kind, direct_key) "
            "VALUES ($1, $2, 1, $3, $4, 'direct', $5) ON CONFLICT DO NOTHING RETURNING id"
        )

        # Counts one more room for a user (parameters: the user, the most they
        # may create) and returns the new count, or no row when they have
        # created that many already. In the transaction that creates the room,
        # so a room that is not created is not counted; on PostgreSQL the row's
        # lock orders two nodes creating rooms for one user, so the limit holds
        # exactly across a cluster.
        self._count_created = sql(
            "INSERT INTO room_creators (user_id, rooms) VALUES ($1, 1) "
            "ON CONFLICT (user_id) DO UPDATE SET rooms = room_creators.rooms + 1 "
            "WHERE room_creators.rooms < $2 RETURNING rooms"
        )
        # Takes the number of the next created room (room_numbering, migration
        # 0008): returns the number taken. On PostgreSQL the row's lock orders
        # nodes creating rooms at once.
        self._take_number = (
            "UPDATE room_numbering SET next_id = next_id + 1 WHERE id = 1 RETURNING next_id - 1"
        )
        # The first id from $1 on that no room has, when $1 is taken (by a room
        # open mode created under that id): the end of the run of taken ids
        # that starts there. The numbering then continues after it, so each
        # such room is stepped over once, however many rooms are created later.
        self._free_id_from = sql(
            "SELECT r.id + 1 FROM rooms AS r WHERE r.id >= $1 AND NOT EXISTS "
            "(SELECT 1 FROM rooms AS s WHERE s.id = r.id + 1) ORDER BY r.id LIMIT 1"
        )
        self._set_number = sql("UPDATE room_numbering SET next_id = $1 WHERE id = 1")

    def get(self, room_id: int) -> Steps[Room | None]:
        rows = yield (self._room, (room_id,))
        if not rows:
            return None
        if self._dialect.arrays:
            return _with_arrays(rows)[0]
        return rooms(rows, (yield (self._members, (room_id,))))[0]

    def ensure(
        self, room_id: int, created_by: str, now: int, max_rooms: int | None
    ) -> Steps[Room | None]:
        """The room, created as a public room if missing; ``None`` past ``max_rooms``."""
        created = yield (self._insert, (room_id, f"Room {room_id}", 0, created_by, now))
        if created and not (yield from self._counted(created_by, max_rooms)):
            # Not committed yet, so nobody saw it: the transaction ends as it began.
            yield (self._delete, (room_id,))
            return None
        if created:
            yield (self._add_member, (room_id, created_by, "owner", now))
        return (yield from self.get(room_id))

    def create(
        self,
        name: str,
        private: bool,
        members: tuple[str, ...],
        created_by: str | None,
        now: int,
        max_rooms: int | None,
    ) -> Steps[Room | None]:
        """A new room, numbered here; ``None`` when ``created_by`` is past ``max_rooms``."""
        if created_by is not None and not (yield from self._counted(created_by, max_rooms)):
            return None
        # Numbered here, not by the database: past the largest id SQLite's
        # rowid would be random (and beyond what a browser can hold).
        room_id = room_number((yield (self._take_number, ()))[0][0])
        values = (name, int(private), created_by, now)
        while not (yield (self._insert, (room_id, *values))):
            # Taken by a room open mode created (maybe a moment ago, on
            # another node): step over the run of them.
            room_id = room_number((yield (self._free_id_from, (room_id,)))[0][0])
            yield (self._set_number, (room_id + 1,))
        owners = () if created_by is None else (created_by,)
        joining = [
            (room_id, member, "owner" if member in owners else "member", now)
            for member in dict.fromkeys([*owners, *members])
        ]
        yield Many(self._add_member, joining)
        return (yield from self.get(room_id))

    def update(
        self, room_id: int, name: str | None, topic: str | None, private: bool | None
    ) -> Steps[Room | None]:
        """Change what is given of a room that is not archived; None if there is none."""
        flag = None if private is None else int(private)
        if not (yield (self._update, (room_id, name, topic, flag))):
            return None
        return (yield from self.get(room_id))

    def archive(self, room_id: int, now: int) -> Steps[Room | None]:
        """Close a room to new posts (history stays); None if it was archived already."""
        if not (yield (self._archive, (room_id, now))):
            return None
        return (yield from self.get(room_id))

    def direct(self, first: str, second: str, now: int) -> Steps[Room]:
        """The one direct room of two users, made on first use (both its members)."""
        key = direct_key(first, second)
        rows = yield (self._direct, (key,))
        if not rows:
            room_id = room_number((yield (self._take_number, ()))[0][0])
            while not (yield (self._insert_direct, (room_id, "direct", first, now, key))):
                rows = yield (self._direct, (key,))
                if rows:  # made at the same moment by another node
                    break
                room_id = room_number((yield (self._free_id_from, (room_id,)))[0][0])
                yield (self._set_number, (room_id + 1,))
            else:
                rows = [(room_id,)]
        room_id = rows[0][0]
        # Both are members again, whoever left it meanwhile.
        yield Many(self._add_member, [(room_id, user, "member", now) for user in (first, second)])
        room = yield from self.get(room_id)
        assert room is not None
        return room

    def roles(self, user_id: str, room_ids: Sequence[int]) -> Steps[dict[int, str]]:
        """The user's role in each of the rooms they belong to."""
        if not room_ids:
            return {}
        sql = _roles(self._dialect, len(room_ids))
        rows = yield (sql, (user_id, *self._dialect.list_args(list(room_ids))))
        return {row[0]: row[1] for row in rows}

    def _counted(self, user_id: str, max_rooms: int | None) -> Steps[bool]:
        """Count a room the user creates in this transaction; False past ``max_rooms``."""
        return bool((yield (self._count_created, (user_id, creation_limit(max_rooms)))))

    def listing(
        self,
        user_id: str | None,
        after: int,
        limit: int,
        name_contains: str | None,
        members_limit: int,
        mine: bool = False,
    ) -> Steps[list[Room]]:
        named = name_contains is not None
        key = (named, mine and user_id is not None)
        args: list[Any] = [user_id, after, limit]
        if name_contains is not None:
            args.append(name_key(name_contains))
        if self._dialect.arrays:
            return _with_arrays((yield (self._listing[key], (*args, members_limit))))
        rows = yield (self._listing[key], args)
        private = [row[0] for row in rows if row[2]]
        members: Sequence[Row] = ()
        if private:
            members = yield (
                _first_members(self._dialect, len(private)),
                (members_limit, *self._dialect.list_args(private)),
            )
        return rooms(rows, members)


@functools.lru_cache(maxsize=256)
def _first_members(dialect: Dialect, count: int) -> str:
    """The first ($1) members of ``count`` rooms, by room and user id."""
    order = f"user_id{dialect.code_point_order}"
    return dialect.sql(
        "SELECT room_id, user_id FROM (SELECT room_id, user_id, ROW_NUMBER() "
        f"OVER (PARTITION BY room_id ORDER BY {order}) AS n FROM room_members "
        f"WHERE {dialect.in_list('room_id', 2, count, 'bigint')}) AS m "
        f"WHERE n <= $1 ORDER BY room_id, {order}"
    )


@functools.lru_cache(maxsize=256)
def _roles(dialect: Dialect, count: int) -> str:
    """A user's ($1) roles in ``count`` rooms."""
    return dialect.sql(
        "SELECT room_id, role FROM room_members WHERE user_id = $1 AND "
        + dialect.in_list("room_id", 2, count, "bigint")
    )


def _with_arrays(rows: Sequence[Row]) -> list[Room]:
    """Rooms from rows whose last column is the array of their members."""
    return rooms(rows, [(row[0], user) for row in rows for user in row[10]])


def rooms(room_rows: Iterable[Row], member_rows: Iterable[Row]) -> list[Room]:
    """Rooms from rows of a room query, with the members of the private ones.

    ``member_rows`` are ``(room_id, user_id)`` in that order; members of a
    public room are not part of it (the room admits everyone).
    """
    members: dict[int, list[str]] = {}
    for row in member_rows:
        members.setdefault(row[0], []).append(row[1])
    return [
        Room(
            id=row[0],
            name=row[1],
            private=bool(row[2]),
            created_by=row[3],
            created_at=row[4],
            members=tuple(members.get(row[0], ())) if row[2] else (),
            last_seq=row[5],
            member_count=row[6] if row[2] else 0,
            topic=row[7],
            kind=row[8],
            archived_at=row[9],
        )
        for row in room_rows
    ]
