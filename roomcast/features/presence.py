"""Presence statuses: chosen by users (away, busy, dnd, offline to appear
invisible; with a text and an end), or automatic (online, away after a quiet
spell); online and offline follow their connections (the core's presence book).

Activity reaches the log from messages (every replica sees them: the engine
counts a message as its author's activity) and from clients' ``activity``
requests, which each node passes on at most once per :data:`ACTIVITY_EVERY`
per user unless the user is away, so typing in a client costs the log next
to nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from roomcast.core.limits import MessageClass
from roomcast.node.connections import LocalConnection
from roomcast.node.feature import Applier, Feature, NodeParts, Route
from roomcast.ports.broker import LogEntry, Scope, Snapshot, user_scope
from roomcast.protocol import (
    ActivityRequest,
    ErrorCode,
    PresenceRequest,
    ProtocolError,
    Status,
)
from roomcast.protocol.names import topic_text

#: Seconds between two activities of one user that a node passes on.
ACTIVITY_EVERY = 30.0


class StatusSet(LogEntry, tag="status", frozen=True, gc=False):
    conn: str
    user: str
    status: Status
    text: str | None = None
    until: int | None = None

    def scope(self) -> Scope:
        return user_scope(self.user)


class ActivitySeen(LogEntry, tag="active", frozen=True, gc=False):
    """The user was active at ``wall`` (``shown``: input or a message, not a
    mere new connection)."""

    user: str
    wall: int
    shown: bool = True

    def scope(self) -> Scope:
        return user_scope(self.user)


class UserStatus(msgspec.Struct, frozen=True, gc=False, array_like=True):
    status: Status  # the chosen one, or "online" for the automatic one
    text: str | None = None
    until: int | None = None
    last_active: int | None = None
    idle_since: int | None = None
    away: bool = False


class StatusPart(msgspec.Struct, frozen=True, gc=False):
    """A node's share of a snapshot: the presence of the user of each of its connections."""

    statuses: dict[str, UserStatus]


class PresenceStatus(Feature):
    name = "presence"

    def __init__(self, parts: NodeParts) -> None:
        super().__init__(parts)
        self._part_decoder = msgspec.json.Decoder(StatusPart)
        # When this node last passed on each user's activity (loop time).
        self._passed_on: dict[str, float] = {}

    def routes(self) -> Iterable[Route]:
        return (
            Route(PresenceRequest, MessageClass.OTHER, self._presence),
            Route(ActivityRequest, MessageClass.OTHER, self._activity),
        )

    def appliers(self) -> Mapping[type[LogEntry], Applier]:
        return {StatusSet: self._status_set, ActivitySeen: self._activity_seen}

    # -- requests -----------------------------------------------------------------------

    def _presence(self, conn: LocalConnection, request: PresenceRequest) -> None:
        assert conn.user_id is not None
        text = _status_text(request)
        until = request.until
        if until is not None:
            if request.status == "online":
                raise ProtocolError(
                    ErrorCode.INVALID_MESSAGE,
                    "payload.until: online is the automatic status; it has no end",
                    request.TYPE,
                )
            if until <= self.parts.clock.wall_ms():
                raise ProtocolError(
                    ErrorCode.INVALID_MESSAGE, "payload.until: must be in the future", request.TYPE
                )
        self.parts.append(StatusSet(conn.id, conn.user_id, request.status, text, until))

    def _activity(self, conn: LocalConnection, request: ActivityRequest) -> None:
        assert conn.user_id is not None
        self._pass_on(conn.user_id)

    def user_connected(self, conn: LocalConnection) -> None:
        """A new connection starts the count towards away (it is not shown as
        activity: a phone may reconnect in a pocket)."""
        assert conn.user_id is not None
        self.parts.append(ActivitySeen(conn.user_id, self.parts.clock.wall_ms(), shown=False))

    def _pass_on(self, user_id: str) -> None:
        now = self.parts.clock.now()
        last = self._passed_on.get(user_id)
        away = self.parts.engine.presence.status(user_id) == "away"
        if last is not None and now - last < ACTIVITY_EVERY and not away:
            return
        self._passed_on[user_id] = now
        self.parts.append(ActivitySeen(user_id, self.parts.clock.wall_ms()))

    # -- log entries --------------------------------------------------------------------

    def _status_set(self, entry: StatusSet, appended_here: bool) -> None:
        try:
            deliveries = self.parts.engine.set_status(
                entry.conn, entry.status, entry.text, entry.until
            )
        except ProtocolError as exc:
            self.refuse_own(entry.conn, exc)
            return
        self.parts.outbox.deliver(deliveries)
        self.parts.arm_timer()

    def _activity_seen(self, entry: ActivitySeen, appended_here: bool) -> None:
        engine = self.parts.engine
        self.parts.outbox.deliver(engine.active(entry.user, entry.wall, entry.shown))
        self.parts.arm_timer()

    def connection_leaving(self, conn_id: str, wall: int, appended_here: bool) -> None:
        user_id = self.parts.engine.user_of(conn_id)
        if user_id is not None and not self.parts.registry.own_of_user(user_id):
            self._passed_on.pop(user_id, None)

    # -- time -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        due = self.parts.engine.presence.next_deadline()
        if due is None:
            return None
        clock = self.parts.clock
        return clock.now() + (due - clock.wall_ms()) / 1000

    def time_passed(self, at: float, wall: int, appended_here: bool) -> None:
        self.parts.outbox.deliver(self.parts.engine.presence_due(wall))

    # -- snapshots --------------------------------------------------------------------------

    def snapshot_part(self) -> StatusPart:
        engine = self.parts.engine
        statuses: dict[str, UserStatus] = {}
        for conn_id in self.parts.registry.own_ids():
            user_id = engine.user_of(conn_id)
            seen = None if user_id is None else engine.presence.view(user_id)
            if seen is not None:
                chosen = seen.chosen or "online"
                statuses[conn_id] = UserStatus(
                    chosen, seen.text, seen.until, seen.last_active, seen.idle_since, seen.away
                )
        return StatusPart(statuses)

    def restore_part(self, snapshot: Snapshot, part: bytes, appended_here: bool) -> None:
        engine = self.parts.engine
        node_of = self.parts.registry.node_of
        for conn_id, state in self._part_decoder.decode(part).statuses.items():
            user_id = engine.user_of(conn_id)
            if user_id is None:
                continue
            # A status is the user's, not the connection's: a node speaks for it
            # only when it holds all of the user's connections (else newer
            # entries win).
            if all(node_of(c) == snapshot.node for c in engine.connections_of(user_id)):
                deliveries = engine.set_status(conn_id, state.status, state.text, state.until)
                self.parts.outbox.deliver(deliveries)
                self.parts.outbox.deliver(
                    engine.restore_activity(
                        user_id, state.last_active, state.idle_since, state.away
                    )
                )
                self.parts.arm_timer()


def _status_text(request: PresenceRequest) -> str | None:
    """The status text in NFC on one line, or None when there is none."""
    if request.status_text is None:
        return None
    try:
        text = " ".join(topic_text(request.status_text).split())
    except ValueError as exc:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"payload.status_text: {exc}", request.TYPE
        ) from None
    return text or None
