"""Membership: who belongs to a room with which role, bans, room settings,
archiving, and direct rooms.

Membership is stored (it outlives connections); what it does to live
connections goes through the log, so every node applies it at one point:
a removed or banned user's connections leave the room there, on every node,
and nothing of the room that comes later in the log reaches them. The HTTP
call that removes someone returns once its entry is applied on this node,
so anything the remover does next is applied after it everywhere.

The rules (who may do what) are :mod:`roomcast.core.membership`'s; this
module looks up the roles, asks them, writes, and announces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

from roomcast.core.deliveries import ToConnections
from roomcast.core.membership import LAST_OWNER, Action, Role, refusal
from roomcast.features.rooms import RoomAnnounced, room_info
from roomcast.node.feature import Applier, Feature
from roomcast.ports.broker import CLUSTER, LogEntry, Scope
from roomcast.ports.store import Member, Room
from roomcast.protocol import (
    AddMember,
    ErrorCode,
    Event,
    MemberAdded,
    MemberRemoved,
    ProtocolError,
    RoleChanged,
    RoomInfo,
    RoomUpdated,
    UpdateRoom,
)

RemovalReason = Literal["left", "removed", "banned"]


class MembershipChanged(LogEntry, tag="member", frozen=True, gc=False):
    """A membership fact changed: ``user`` was added (with ``role``), removed
    (for ``reason``) or given ``role``, by ``by``. ``waiter`` is the key the HTTP
    call that made the change waits on, on the node that appended it."""

    room: int
    user: str
    change: Literal["added", "removed", "role", "unbanned"]
    by: str
    role: Role = Role.MEMBER
    reason: RemovalReason = "removed"
    waiter: str = ""
    # Log time of the change, so every replica leaves the room at the same time.
    at: float = 0.0

    def scope(self) -> Scope:
        # The user's connections are told even where they are not in the room.
        return CLUSTER

    def event(self) -> MemberAdded | MemberRemoved | RoleChanged | None:
        if self.change == "unbanned":
            return None  # the moderator's call is answered; nobody else is told
        if self.change == "added":
            return MemberAdded(self.room, self.user, self.role, self.by)
        if self.change == "removed":
            return MemberRemoved(self.room, self.user, self.by, self.reason)
        return RoleChanged(self.room, self.user, self.role, self.by)


class RoomChanged(LogEntry, tag="room_changed", frozen=True, gc=False):
    info: RoomInfo
    waiter: str = ""

    def scope(self) -> Scope:
        return CLUSTER


class Membership(Feature):
    name = "membership"

    def appliers(self) -> Mapping[type[LogEntry], Applier]:
        return {MembershipChanged: self._membership_changed, RoomChanged: self._room_changed}

    # -- reading -----------------------------------------------------------------------

    async def room(self, room_id: int) -> Room:
        room = await self.parts.store.get_room(room_id)
        if room is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"room {room_id} does not exist")
        return room

    async def role_of(self, room_id: int, user_id: str) -> Role | None:
        state = await self.parts.store.member_state(room_id, user_id)
        return None if state.member is None else Role(state.member.role)

    async def _check(
        self, room: Room, actor: str, action: Action, target: str | None = None
    ) -> Role | None:
        """Refuse unless ``actor`` may take ``action`` (on ``target``); the target's role."""
        actor_role = await self.role_of(room.id, actor)
        target_role = None if target is None else await self.role_of(room.id, target)
        why = refusal(actor_role, action, target_role, direct=room.direct)
        if why is not None:
            raise ProtocolError(ErrorCode.FORBIDDEN, why)
        return target_role

    # -- changing ----------------------------------------------------------------------

    async def add(self, room_id: int, actor: str, body: AddMember) -> Member:
        room = await self.room(room_id)
        await self._check(room, actor, Action.ADD_MEMBER)
        if body.role != "member":  # adding as moderator or owner is giving a role
            await self._check(room, actor, Action.CHANGE_ROLE)
        self._refuse_archived(room)
        change = await self.parts.store.add_member(
            room.id, body.user_id, body.role, self.parts.clock.wall_ms()
        )
        assert change.member is not None
        if change.changed:
            role = Role(change.member.role)
            await self._announce(MembershipChanged(room.id, body.user_id, "added", actor, role))
        return change.member

    async def remove(self, room_id: int, actor: str, user_id: str, ban: bool) -> None:
        """Remove ``user_id`` (oneself: leave for good), and with ``ban`` ban them."""
        room = await self.room(room_id)
        if ban:
            await self._check(room, actor, Action.BAN, user_id)
        elif actor != user_id:
            await self._check(room, actor, Action.REMOVE_MEMBER, user_id)
        change = await self.parts.store.remove_member(
            room.id, user_id, actor if ban else None, self.parts.clock.wall_ms()
        )
        if change.last_owner:
            raise ProtocolError(ErrorCode.FORBIDDEN, LAST_OWNER)
        if not change.changed:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{user_id!r} is not a member of the room")
        reason: RemovalReason = "banned" if ban else "left" if actor == user_id else "removed"
        await self._announce(MembershipChanged(room.id, user_id, "removed", actor, reason=reason))

    async def unban(self, room_id: int, actor: str, user_id: str) -> None:
        room = await self.room(room_id)
        await self._check(room, actor, Action.UNBAN)
        if not await self.parts.store.unban(room.id, user_id):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{user_id!r} is not banned from the room")
        await self._announce(MembershipChanged(room.id, user_id, "unbanned", actor))

    async def set_role(self, room_id: int, actor: str, user_id: str, role: Role) -> Member:
        room = await self.room(room_id)
        await self._check(room, actor, Action.CHANGE_ROLE, user_id)
        change = await self.parts.store.set_role(room.id, user_id, role)
        if change.last_owner:
            raise ProtocolError(ErrorCode.FORBIDDEN, LAST_OWNER)
        if change.member is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{user_id!r} is not a member of the room")
        if change.changed:
            await self._announce(MembershipChanged(room.id, user_id, "role", actor, role))
        return change.member

    async def update(self, room_id: int, actor: str, body: UpdateRoom) -> Room:
        room = await self.room(room_id)
        await self._check(room, actor, Action.EDIT_ROOM)
        self._refuse_archived(room)
        changed = await self.parts.store.update_room(room.id, body.name, body.topic, body.private)
        if changed is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"room {room.id} is archived")
        await self._room_announced(changed)
        return changed

    async def archive(self, room_id: int, actor: str) -> Room:
        room = await self.room(room_id)
        await self._check(room, actor, Action.ARCHIVE_ROOM)
        archived = await self.parts.store.archive_room(room.id, self.parts.clock.wall_ms())
        if archived is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"room {room.id} is archived already")
        await self._room_announced(archived)
        return archived

    async def direct(self, user_id: str, other: str) -> tuple[Room, bool]:
        """The direct room of the two, and whether this call created it."""
        if other == user_id:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "body.user_id: a direct room needs two")
        now = self.parts.clock.wall_ms()
        room = await self.parts.store.direct_room(user_id, other, now)
        created = (room.created_by, room.created_at) == (user_id, now)
        if created:  # made just now: tell both
            await self._announce(RoomAnnounced(room_info(room)))
        return room, created

    @staticmethod
    def _refuse_archived(room: Room) -> None:
        if room.archived_at is not None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"room {room.id} is archived")

    # -- through the log ---------------------------------------------------------------

    async def _announce(self, entry: MembershipChanged | RoomChanged | RoomAnnounced) -> None:
        """Append the entry and return once this node applied it: every node
        applies what comes after it in the log after it."""
        waiter = self.parts.waits.key()
        waiting = self.parts.waits.expect(waiter)
        stamped = {"at": self.parts.clock.now()} if isinstance(entry, MembershipChanged) else {}
        self.parts.append(msgspec.structs.replace(entry, waiter=waiter, **stamped))
        await self.parts.waits.wait(waiting)

    async def _room_announced(self, room: Room) -> None:
        await self._announce(RoomChanged(room_info(room)))

    def _membership_changed(self, entry: MembershipChanged, appended_here: bool) -> None:
        parts = self.parts
        engine = parts.engine
        event = entry.event()
        if event is not None:
            self._tell(entry.room, entry.user, event)
        if entry.change in ("added", "unbanned"):
            engine.rooms.readmitted(entry.room, entry.user)
        if entry.change == "removed":
            # A join whose admission was read before this removal is refused
            # where the log brings it (see rooms.Joined.checked_at).
            engine.rooms.removed(entry.room, entry.user, entry.at)
            # Every connection of the user leaves the room here, on every node.
            leaving = [c for c in engine.connections_of(entry.user)
                       if engine.rooms.has_connection(entry.room, c)]  # fmt: skip
            if leaving:
                parts.outbox.membership_changed((entry.room,))
            for conn_id in leaving:
                parts.outbox.deliver(engine.leave(conn_id, entry.room, entry.at))
        if appended_here and entry.waiter:
            parts.waits.settle(entry.waiter)

    def _room_changed(self, entry: RoomChanged, appended_here: bool) -> None:
        info = entry.info
        if info.archived_at is not None:
            self.parts.engine.rooms.archive(info.id)
        self._tell(info.id, None, RoomUpdated(info))
        if appended_here and entry.waiter:
            self.parts.waits.settle(entry.waiter)

    def _tell(self, room_id: int, user_id: str | None, event: Event) -> None:
        """The event to this node's connections in the room, and to the user's own."""
        engine, registry = self.parts.engine, self.parts.registry
        targets = [c for c in engine.rooms.connections(room_id) if registry.is_own(c)]
        if user_id is not None:
            targets += [c for c in registry.own_of_user(user_id) if c not in targets]
        if targets:
            self.parts.outbox.deliver((ToConnections(tuple(targets), event),))
