"""Notifications: a user was mentioned, or someone replied in a thread they
took part in.

They are made and taken back by the store in the transaction of the message
that causes them (:mod:`roomcast.adapters.sql.conversations`); this feature
carries them to every connection of their user, on every node, whether or not
that connection is in the room, and marks them read on request. A user who
is busy or in do-not-disturb gets them all the same, flagged ``quiet``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from roomcast.core.deliveries import ToConnections
from roomcast.core.limits import MessageClass
from roomcast.node.connections import LocalConnection
from roomcast.node.feature import Applier, Feature, Route
from roomcast.ports.broker import LogEntry, Scope, user_scope
from roomcast.ports.store import Outcome, ReadNotifications, Result
from roomcast.protocol import (
    ErrorCode,
    Event,
    Notification,
    NotificationInfo,
    NotificationReadRequest,
    NotificationRetracted,
    NotificationsRead,
    ProtocolError,
)

#: Statuses in which notifications arrive ``quiet``.
QUIET_STATUSES = frozenset({"busy", "dnd"})


class Notified(LogEntry, tag="notified", frozen=True, gc=False):
    user: str
    notification: Notification

    def scope(self) -> Scope:
        return user_scope(self.user)


class Retracted(LogEntry, tag="retracted", frozen=True, gc=False):
    """The user's notifications ``ids`` about a message of ``room`` are void."""

    user: str
    ids: tuple[int, ...]
    room: int

    def scope(self) -> Scope:
        return user_scope(self.user)


class NotificationsMarkedRead(LogEntry, tag="notifications_read", frozen=True, gc=False):
    """The user's notifications ``ids`` (about messages of ``rooms``) are read."""

    user: str
    ids: tuple[int, ...]
    rooms: tuple[int, ...]

    def scope(self) -> Scope:
        return user_scope(self.user)


def marked_read(user_id: str, read: Iterable[tuple[int, int]]) -> NotificationsMarkedRead | None:
    """The entry for notifications a write marked read (``(id, room)`` pairs), if any."""
    pairs = list(read)
    if not pairs:
        return None
    rooms = tuple(sorted({room for _, room in pairs}))
    return NotificationsMarkedRead(user_id, tuple(i for i, _ in pairs), rooms)


class Notifications(Feature):
    name = "notifications"

    def routes(self) -> Iterable[Route]:
        return (Route(NotificationReadRequest, MessageClass.OTHER, self._read),)

    def appliers(self) -> Mapping[type[LogEntry], Applier]:
        return {
            Notified: self._notified,
            Retracted: self._retracted,
            NotificationsMarkedRead: self._marked_read,
        }

    async def listing(
        self, user_id: str, unread_only: bool, before: int | None, limit: int
    ) -> list[NotificationInfo]:
        return await self.parts.store.notifications(user_id, unread_only, before, limit)

    # -- requests -----------------------------------------------------------------------

    def _read(self, conn: LocalConnection, request: NotificationReadRequest) -> None:
        user_id = conn.user_id
        assert user_id is not None
        ids = tuple(dict.fromkeys(request.ids))
        op = ReadNotifications(user_id, ids, self.parts.clock.wall_ms())

        def done(result: Result | None, error: BaseException | None) -> None:
            if error is not None or result is None or result.outcome is not Outcome.DONE:
                failure = ProtocolError(
                    ErrorCode.INTERNAL, "the notifications could not be marked", request.TYPE
                )
                self.parts.outbox.reply_error(conn, failure)
                return
            entry = marked_read(user_id, result.read)
            if entry is not None:  # ids already read, or not the user's, change nothing
                self.parts.append(entry)

        self.parts.store.submit(op, done)

    # -- log entries --------------------------------------------------------------------

    def _to_user(self, user_id: str, events: Iterable[Event]) -> None:
        conns = tuple(self.parts.registry.own_of_user(user_id))
        if conns:
            self.parts.outbox.deliver(ToConnections(conns, event) for event in events)

    def _notified(self, entry: Notified, appended_here: bool) -> None:
        notification = entry.notification
        if self.parts.engine.presence.status(entry.user) in QUIET_STATUSES:
            notification = msgspec.structs.replace(notification, quiet=True)
        self._to_user(entry.user, (notification,))

    def _retracted(self, entry: Retracted, appended_here: bool) -> None:
        self._to_user(entry.user, (NotificationRetracted(i) for i in entry.ids))

    def _marked_read(self, entry: NotificationsMarkedRead, appended_here: bool) -> None:
        self._to_user(entry.user, (NotificationsRead(list(entry.ids)),))
