"""1:1 calls: WebRTC signaling relayed through the core's call state machine.

Every replica runs the same :class:`~roomcast.core.calls.CallRegistry` over
the same entries, so every node agrees on ringing, busy, glare and timeouts;
the node that appended an entry is the one that stores the call records it
produces (in the background: signaling never waits for the disk).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import msgspec

from roomcast.core.calls import Call, CallEffect, CallRecord, CallRegistry, CallState
from roomcast.core.deliveries import Delivery
from roomcast.core.limits import MessageClass
from roomcast.node.connections import LocalConnection
from roomcast.node.feature import Applier, Feature, NodeParts, Route
from roomcast.ports.broker import LogEntry, Scope, Snapshot, user_scope
from roomcast.ports.store import Result
from roomcast.protocol import (
    MAX_MEDIA_BYTES,
    CallEndRequest,
    CallRejectRequest,
    ErrorCode,
    ProtocolError,
    SignalKind,
    WebRTCRequest,
)

log = logging.getLogger("roomcast.calls")


class CallSignalled(LogEntry, tag="call_signal", frozen=True, gc=False):
    """A ``webrtc`` message: an offer without ``call`` starts call ``new_id``."""

    conn: str
    user: str
    signal: SignalKind
    to_user: str
    call: str | None
    data: msgspec.Raw
    media: msgspec.Raw
    at: float
    wall: int
    new_id: str = ""

    def scope(self) -> Scope:
        return user_scope(self.user)


class _CallEnding(LogEntry, frozen=True, gc=False):
    """A party ends call ``call``: how is the subclass (hang up or decline)."""

    conn: str
    user: str
    call: str
    wall: int

    def scope(self) -> Scope:
        return user_scope(self.user)


class CallHungUp(_CallEnding, tag="call_end", frozen=True, gc=False):
    pass


class CallRejected(_CallEnding, tag="call_reject", frozen=True, gc=False):
    pass


class CallSnapshot(msgspec.Struct, frozen=True, gc=False):
    """A call as a node's snapshot carries it."""

    id: str
    caller: str
    callee: str
    caller_conn: str
    media: msgspec.Raw
    started_at: int
    ring_deadline: float
    ringing_conns: tuple[str, ...] = ()
    callee_conn: str | None = None
    answered_at: int | None = None


class CallsPart(msgspec.Struct, frozen=True, gc=False):
    """A node's share of a snapshot: the calls its connections placed."""

    calls: tuple[CallSnapshot, ...]


class Calls(Feature):
    name = "calls"

    def __init__(self, parts: NodeParts) -> None:
        super().__init__(parts)
        self.registry = CallRegistry(
            parts.engine,
            new_id=parts.clock.new_id,
            ring_timeout=parts.settings.ring_timeout,
            require_shared_room=not parts.settings.allow_calls_outside_rooms,
        )
        self._part_decoder = msgspec.json.Decoder(CallsPart)
        parts.metrics.gauge(
            "roomcast_calls", "Calls ringing or active.", self.registry.active_count
        )

    def routes(self) -> Iterable[Route]:
        return (
            Route(WebRTCRequest, MessageClass.SIGNALING, self._webrtc),
            Route(CallEndRequest, MessageClass.SIGNALING, self._end),
            Route(CallRejectRequest, MessageClass.SIGNALING, self._reject),
        )

    def appliers(self) -> Mapping[type[LogEntry], Applier]:
        return {
            CallSignalled: self._signalled,
            CallHungUp: self._hung_up,
            CallRejected: self._rejected,
        }

    # -- requests -----------------------------------------------------------------------

    def _webrtc(self, conn: LocalConnection, request: WebRTCRequest) -> None:
        parts = self.parts
        limit = parts.settings.max_signal_bytes
        if len(request.data) > limit:
            raise ProtocolError(
                ErrorCode.TOO_LARGE, f"payload.data: larger than {limit} bytes", request.TYPE
            )
        if len(request.media) > MAX_MEDIA_BYTES:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"payload.media: larger than {MAX_MEDIA_BYTES} bytes",
                request.TYPE,
            )
        new_id = parts.clock.new_id() if request.type == "offer" and request.call_id is None else ""
        assert conn.user_id is not None
        parts.append(
            CallSignalled(
                conn.id,
                conn.user_id,
                request.type,
                request.to_user_id,
                request.call_id,
                request.data,
                request.media,
                parts.clock.now(),
                parts.clock.wall_ms(),
                new_id,
            )
        )

    def _end(self, conn: LocalConnection, request: CallEndRequest) -> None:
        assert conn.user_id is not None
        wall = self.parts.clock.wall_ms()
        self.parts.append(CallHungUp(conn.id, conn.user_id, request.call_id, wall))

    def _reject(self, conn: LocalConnection, request: CallRejectRequest) -> None:
        assert conn.user_id is not None
        wall = self.parts.clock.wall_ms()
        self.parts.append(CallRejected(conn.id, conn.user_id, request.call_id, wall))

    # -- log entries --------------------------------------------------------------------

    def _signalled(self, entry: CallSignalled, appended_here: bool) -> None:
        user_id = self.parts.engine.user_of(entry.conn)
        if user_id is None:  # closed before its request came round
            return
        calls = self.registry
        try:
            if entry.signal == "offer" and entry.call is None:
                effects = calls.offer(
                    entry.conn,
                    user_id,
                    entry.to_user,
                    entry.data,
                    entry.media,
                    entry.at,
                    entry.wall,
                    call_id=entry.new_id,
                )
            else:
                call = calls.find(entry.call, user_id, entry.to_user, WebRTCRequest.TYPE)
                effects = calls.signal(
                    entry.conn, user_id, entry.signal, call, entry.data, entry.wall
                )
        except ProtocolError as exc:
            self.refuse_own(entry.conn, exc)
            return
        self._apply(effects, appended_here)

    def _hung_up(self, entry: CallHungUp, appended_here: bool) -> None:
        self._ending(entry, self.registry.hang_up, CallEndRequest.TYPE, appended_here)

    def _rejected(self, entry: CallRejected, appended_here: bool) -> None:
        self._ending(entry, self.registry.reject, CallRejectRequest.TYPE, appended_here)

    def _ending(
        self,
        entry: _CallEnding,
        end: Callable[[str, str, Call, int], list[CallEffect]],
        request_type: str,
        appended_here: bool,
    ) -> None:
        user_id = self.parts.engine.user_of(entry.conn)
        if user_id is None:  # closed before its request came round
            return
        try:
            call = self.registry.find(entry.call, user_id, None, request_type)
            effects = end(entry.conn, user_id, call, entry.wall)
        except ProtocolError as exc:
            self.refuse_own(entry.conn, exc)
            return
        self._apply(effects, appended_here)

    def _apply(self, effects: list[CallEffect], appended_here: bool) -> None:
        """Send what the calls decided; the node whose entry it was stores the records."""
        deliveries: list[Delivery] = []
        for effect in effects:
            if isinstance(effect, CallRecord):
                if appended_here:
                    self._save(effect)
            else:
                deliveries.append(effect)
        self.parts.outbox.deliver(deliveries)
        self.parts.arm_timer()

    def _save(self, record: CallRecord) -> None:
        try:
            self.parts.store.submit(record, _log_unsaved_call)
        except RuntimeError:
            log.error("call not recorded, store closed call=%s", record.call_id)

    # -- the node's hooks ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self.registry.next_deadline()

    def time_passed(self, at: float, wall: int, appended_here: bool) -> None:
        self._apply(self.registry.expire(at, wall), appended_here)

    def connection_leaving(self, conn_id: str, wall: int, appended_here: bool) -> None:
        self._apply(self.registry.disconnected(conn_id, wall), appended_here)

    def snapshot_part(self) -> CallsPart:
        own = self.parts.registry.is_own
        return CallsPart(
            tuple(
                msgspec.convert(call, CallSnapshot, from_attributes=True)
                for call in self.registry.calls()
                if own(call.caller_conn)
            )
        )

    def restore_part(self, snapshot: Snapshot, part: bytes, appended_here: bool) -> None:
        # The node speaks for the calls its connections placed: one it does not
        # list is over (it ended there while this replica missed it).
        listed = self._part_decoder.decode(part).calls
        listed_ids = {call.id for call in listed}
        node_of = self.parts.registry.node_of
        for known in self.registry.calls():
            if known.id not in listed_ids and node_of(known.caller_conn) == snapshot.node:
                self._apply(self.registry.drop(known.id, snapshot.wall), appended_here)
        for call in listed:
            fields = msgspec.structs.asdict(call)
            fields["ringing_conns"] = set(call.ringing_conns)
            fields["state"] = CallState.ACTIVE if call.callee_conn else CallState.RINGING
            self.registry.restore(Call(**fields))


def _log_unsaved_call(result: Result | None, error: BaseException | None) -> None:
    if error is not None:
        log.error("call not recorded error=%r", error)
