"""Read markers, read receipts and unread counts.

``read`` moves a member's marker forward (the store ignores one that would
move back, and then nothing is said). A moved marker is a log entry: the
room's joined connections get a ``read_receipt`` (paced, see
:class:`~roomcast.core.conversations.ReceiptPacer`), the reader's own
connections get the room's new counts, so one device clears the others'
badges.

Counts are always read from the store, never kept here, so a restart or
another node gives the same numbers. This node only knows which rooms its
users belong to, to tell which counts may have changed: after a new message
or a delete in a room, its members' connections that are not joined to it
(a joined one gets the messages themselves) get the room's counts again, at
most once per room and loop turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from roomcast.core.conversations import ReceiptKey, ReceiptPacer
from roomcast.core.deliveries import ToRoom
from roomcast.core.limits import MessageClass
from roomcast.features.membership import MembershipChanged
from roomcast.features.messages import MessageChanged, MessageStored
from roomcast.features.notifications import (
    NotificationsMarkedRead,
    Notified,
    Retracted,
    marked_read,
)
from roomcast.features.rooms import Joined, Left, RoomAnnounced
from roomcast.node.connections import LocalConnection
from roomcast.node.feature import Applier, Feature, NodeParts, Route
from roomcast.ports.broker import (
    Closed,
    Identified,
    LogEntry,
    NodeGone,
    Opened,
    Scope,
    Snapshot,
    room_scope,
)
from roomcast.ports.store import MarkRead, Outcome, Result
from roomcast.protocol import ErrorCode, ProtocolError, ReadReceipt, ReadRequest, RoomUnread, Unread

log = logging.getLogger("roomcast.node")


class ReadMoved(LogEntry, tag="read", frozen=True, gc=False):
    user: str
    room: int
    thread: int | None
    message: int

    def scope(self) -> Scope:
        return room_scope(self.room)


class Reads(Feature):
    name = "reads"

    def __init__(self, parts: NodeParts) -> None:
        super().__init__(parts)
        self.pacer = ReceiptPacer()
        self._receipt_timer: asyncio.TimerHandle | None = None
        # The rooms of this node's users, and the reverse.
        self._rooms_of: dict[str, set[int]] = {}
        self._members_of: dict[int, set[str]] = {}
        # Counts to send again: rooms with new or deleted messages (to members'
        # connections not joined to them), per user rooms whose counts changed
        # for them (to all their connections), and per user rooms new to them
        # (to their connections not joined to them: a joined one is told by
        # the room itself).
        self._rooms_changed: set[int] = set()
        self._users_changed: dict[str, set[int]] = {}
        self._users_joined: dict[str, set[int]] = {}
        # Per room: its members' connections here that are not joined to it, by
        # user. Worked out when a room has a new message and kept until any
        # connection joins, leaves, comes or goes, so that the usual room,
        # where everyone is joined, costs a lookup per message and no more.
        self._away: dict[int, dict[str, set[str]]] = {}
        self._flush_due = False
        # Per user: counts waiting to be read, per room the connections to tell.
        self._waiting: dict[str, dict[int, set[str]]] = {}
        self._reading: set[str] = set()

    def routes(self) -> Iterable[Route]:
        return (Route(ReadRequest, MessageClass.OTHER, self._read),)

    def appliers(self) -> Mapping[type[LogEntry], Applier]:
        return {ReadMoved: self._read_moved}

    def observers(self) -> Mapping[type[LogEntry], Applier]:
        return {
            MessageStored: self._message_stored,
            MessageChanged: self._message_changed,
            Notified: self._notified,
            Retracted: lambda entry, here: self._user_changed(entry.user, (entry.room,)),
            NotificationsMarkedRead: lambda entry, here: self._user_changed(
                entry.user, entry.rooms
            ),
            Joined: self._joined,
            Left: self._forget_away,
            Opened: self._forget_away,
            Identified: self._forget_away,
            Closed: self._forget_away,
            NodeGone: self._forget_away,
            Snapshot: self._forget_away,
            MembershipChanged: self._membership_changed,
            RoomAnnounced: self._room_announced,
        }

    # -- the read request ---------------------------------------------------------------

    def _read(self, conn: LocalConnection, request: ReadRequest) -> None:
        user_id = conn.user_id
        assert user_id is not None
        op = MarkRead(
            user_id,
            request.room_id,
            request.thread_id,
            request.message_id,
            self.parts.clock.wall_ms(),
        )

        def done(result: Result | None, error: BaseException | None) -> None:
            refusal = _refusal(request, result, error)
            if refusal is not None:
                self.parts.outbox.reply_error(conn, refusal)
                return
            assert result is not None
            if result.added:  # an older or equal marker: no receipt
                self.parts.append(ReadMoved(user_id, op.room_id, op.thread_id, op.message_id))
            entry = marked_read(user_id, result.read)
            if entry is not None:
                self.parts.append(entry)

        self.parts.store.submit(op, done)

    def _read_moved(self, entry: ReadMoved, appended_here: bool) -> None:
        self._user_changed(entry.user, (entry.room,))
        key: ReceiptKey = (entry.room, entry.user, entry.thread)
        now = self.parts.clock.now()
        if self.pacer.offer(key, entry.message, now):
            self._send_receipt(key, entry.message)
        else:
            self._arm_receipts()

    # -- receipts -------------------------------------------------------------------------

    def _send_receipt(self, key: ReceiptKey, message_id: int) -> None:
        room_id, user_id, thread_id = key
        receipt = ReadReceipt(room_id, user_id, message_id, thread_id)
        self.parts.outbox.deliver((ToRoom(room_id, receipt, except_user=user_id),))

    def _arm_receipts(self) -> None:
        if self._receipt_timer is not None:
            return
        deadline = self.pacer.next_deadline()
        if deadline is None:
            return
        delay = max(0.0, deadline - self.parts.clock.now())
        self._receipt_timer = asyncio.get_running_loop().call_later(delay, self._receipts_due)

    def _receipts_due(self) -> None:
        self._receipt_timer = None
        for key, message_id in self.pacer.due(self.parts.clock.now()):
            self._send_receipt(key, message_id)
        self._arm_receipts()

    # -- who belongs where (this node's users) --------------------------------------------

    def user_connected(self, conn: LocalConnection) -> asyncio.Future[Any]:
        """Right after ``connected``: the counts of every room of the user."""
        return self.parts.tasks.spawn(self._first_counts(conn))

    async def _first_counts(self, conn: LocalConnection) -> None:
        user_id = conn.user_id
        assert user_id is not None
        try:
            counts = await self.parts.store.unread(user_id)
        except Exception as exc:
            # The connection's requests go on without them; the counts are
            # read again in the background until the store answers.
            log.warning("unread counts unavailable user=%s error=%s", user_id, exc)
            self.parts.tasks.spawn(self._counts_later(conn))
            return
        self._greet(conn, counts)

    async def _counts_later(self, conn: LocalConnection) -> None:
        assert conn.user_id is not None
        delay = 0.5
        while not conn.ended:
            await asyncio.sleep(delay)
            try:
                counts = await self.parts.store.unread(conn.user_id)
            except Exception:
                delay = min(delay * 2, 10.0)
                continue
            self._greet(conn, counts)
            return

    def _greet(self, conn: LocalConnection, counts: list[RoomUnread]) -> None:
        """The counts of every room of the user: this node now follows those rooms for them."""
        if conn.ended or conn.user_id is None:
            return  # gone meanwhile: nothing to follow for it
        for count in counts:
            self._belongs(conn.user_id, count.room_id)
        self.parts.outbox.send(conn, Unread(counts))

    def connection_leaving(self, conn_id: str, wall: int, appended_here: bool) -> None:
        user_id = self.parts.engine.user_of(conn_id)
        if user_id is not None and not self.parts.registry.own_of_user(user_id):
            for room_id in self._rooms_of.pop(user_id, set()):
                self._no_longer(user_id, room_id)

    def _belongs(self, user_id: str, room_id: int) -> None:
        self._rooms_of.setdefault(user_id, set()).add(room_id)
        self._members_of.setdefault(room_id, set()).add(user_id)
        self._away.pop(room_id, None)

    def _no_longer(self, user_id: str, room_id: int) -> None:
        self._rooms_of.get(user_id, set()).discard(room_id)
        members = self._members_of.get(room_id)
        if members is not None:
            members.discard(user_id)
            if not members:
                del self._members_of[room_id]
        self._away.pop(room_id, None)

    def _forget_away(self, entry: object, appended_here: bool) -> None:
        self._away.clear()

    def _away_in(self, room_id: int) -> dict[str, set[str]]:
        """The room's members' connections here not joined to it, by user."""
        away = self._away.get(room_id)
        if away is None:
            registry, rooms = self.parts.registry, self.parts.engine.rooms
            away = {}
            for user_id in self._members_of.get(room_id, ()):
                conns = {
                    c for c in registry.own_of_user(user_id) if not rooms.has_connection(room_id, c)
                }
                if conns:
                    away[user_id] = conns
            self._away[room_id] = away
        return away

    def _joined(self, entry: Joined, appended_here: bool) -> None:
        self._away.clear()
        user_id = self.parts.engine.user_of(entry.conn)
        if user_id is None or not self.parts.registry.holds_user(user_id):
            return
        if entry.room not in self._rooms_of.get(user_id, ()):
            # A public room's joiner is a member from now on: their counts start.
            self._belongs(user_id, entry.room)
            self._users_joined.setdefault(user_id, set()).add(entry.room)
            self._flush_soon()

    def _membership_changed(self, entry: MembershipChanged, appended_here: bool) -> None:
        if not self.parts.registry.holds_user(entry.user):
            return
        if entry.change == "added":
            self._belongs(entry.user, entry.room)
            self._user_changed(entry.user, (entry.room,))
        elif entry.change == "removed":
            self._no_longer(entry.user, entry.room)

    def _room_announced(self, entry: RoomAnnounced, appended_here: bool) -> None:
        for user_id in entry.info.members:
            if self.parts.registry.holds_user(user_id):
                self._belongs(user_id, entry.info.id)

    # -- what changes counts ----------------------------------------------------------------

    def _message_stored(self, entry: MessageStored, appended_here: bool) -> None:
        # On every message: kept to a lookup unless this node has a member of the room.
        room_id = entry.message.room_id
        if room_id in self._members_of and self._away.get(room_id, True):
            self._rooms_changed.add(room_id)
            if not self._flush_due:
                self._flush_soon()

    def _message_changed(self, entry: MessageChanged, appended_here: bool) -> None:
        if entry.recount:
            # A delete: joined connections cannot tell from the event whether
            # the message was one they counted, so every member's are told.
            for user_id in list(self._members_of.get(entry.room, ())):
                self._user_changed(user_id, (entry.room,))

    def _notified(self, entry: Notified, appended_here: bool) -> None:
        if entry.notification.kind == "mention":
            self._user_changed(entry.user, (entry.notification.room_id,))

    def _user_changed(self, user_id: str, room_ids: Iterable[int]) -> None:
        if self.parts.registry.holds_user(user_id):
            self._users_changed.setdefault(user_id, set()).update(room_ids)
            self._flush_soon()

    def _flush_soon(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Once per loop turn: whose counts to read again, and who to tell."""
        self._flush_due = False
        registry = self.parts.registry
        wanted: dict[str, dict[int, set[str]]] = {}
        # To connections not joined to the room: a joined one gets its messages.
        for room_id in self._rooms_changed:
            for user_id, away in self._away_in(room_id).items():
                wanted.setdefault(user_id, {}).setdefault(room_id, set()).update(away)
        for user_id, joined in self._users_joined.items():
            for room_id in joined:
                conns = self._away_in(room_id).get(user_id)
                if conns:
                    wanted.setdefault(user_id, {}).setdefault(room_id, set()).update(conns)
        for user_id, room_ids in self._users_changed.items():
            conns = registry.own_of_user(user_id)
            for room_id in room_ids:
                wanted.setdefault(user_id, {}).setdefault(room_id, set()).update(conns)
        self._rooms_changed.clear()
        self._users_joined.clear()
        self._users_changed.clear()
        for user_id, per_room in wanted.items():
            waiting = self._waiting.setdefault(user_id, {})
            for room_id, conns in per_room.items():
                waiting.setdefault(room_id, set()).update(conns)
            if user_id not in self._reading:
                self._reading.add(user_id)
                self.parts.tasks.spawn(self._send_counts(user_id))

    async def _send_counts(self, user_id: str) -> None:
        """Read and send a user's changed counts; one read per user at a time, so
        that newer counts never arrive before older ones."""
        try:
            while waiting := self._waiting.pop(user_id, None):
                try:
                    counts = await self.parts.store.unread(user_id, sorted(waiting))
                except Exception as exc:
                    log.warning("unread counts unavailable user=%s error=%s", user_id, exc)
                    continue
                per_conn: dict[str, list[RoomUnread]] = {}
                for count in counts:
                    for conn_id in waiting.get(count.room_id, ()):
                        per_conn.setdefault(conn_id, []).append(count)
                for conn_id, items in per_conn.items():
                    conn = self.parts.registry.get(conn_id)
                    if conn is not None and not conn.ended:
                        self.parts.outbox.send(conn, Unread(items))
        finally:
            self._reading.discard(user_id)


def _refusal(
    request: ReadRequest, result: Result | None, error: BaseException | None
) -> ProtocolError | None:
    if error is not None or result is None:
        return ProtocolError(
            ErrorCode.INTERNAL, "the read marker could not be stored", request.TYPE
        )
    if result.outcome is Outcome.NOT_FOUND:
        where = (
            f"room {request.room_id}'s timeline"
            if request.thread_id is None
            else f"thread {request.thread_id} of room {request.room_id}"
        )
        return ProtocolError(
            ErrorCode.NOT_FOUND, f"message {request.message_id} is not in {where}", request.TYPE
        )
    if result.outcome is Outcome.FORBIDDEN:
        return ProtocolError(
            ErrorCode.FORBIDDEN, f"you are not a member of room {request.room_id}", request.TYPE
        )
    return None
