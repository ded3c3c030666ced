"""Call sessions: WebRTC signaling that behaves like a phone.

A call is a small state machine, ``RINGING -> ACTIVE -> ENDED`` (or straight
from ``RINGING`` to ``ENDED``). The server does not look inside SDP or ICE
data; it decides *who* may signal *whom*, routes each message to exactly the
connections that belong to the call, and guarantees that every call ends
with a ``call_ended`` that says why: rejected, ended, no_answer,
unavailable, busy, glare, disconnected or answered_elsewhere.

Connections matter, not only users: a callee's phone and laptop both ring,
the one that answers becomes the call's callee connection, and the other
devices are told ``answered_elsewhere``. The caller's offering connection is
the caller side of the call.

:class:`CallRegistry` takes events (with the current monotonic time) and
returns deliveries plus :class:`CallRecord` snapshots to persist. It needs
to know who is online and where; the caller passes that in as a
:class:`Directory`, so the registry stays free of I/O and other state.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Protocol

import msgspec

from roomcast.core.call_state import Call, CallEffect, CallRecord, CallState, record_of
from roomcast.core.deliveries import ToConnections
from roomcast.protocol import (
    CallActive,
    CallEnded,
    CallEndReason,
    CallRinging,
    ErrorCode,
    IncomingCall,
    ProtocolError,
    SignalKind,
    WebRTCSignal,
)

# Call, CallRecord, CallState and CallEffect are used with the registry by
# every caller of it, so they are importable from here as well.
__all__ = ["Call", "CallEffect", "CallRecord", "CallRegistry", "CallState", "Directory"]


class Directory(Protocol):
    """What the registry needs to know about users, from the rest of the core."""

    def connections_of(self, user_id: str) -> tuple[str, ...]: ...

    def shares_room(self, user_a: str, user_b: str) -> bool: ...

    def appears_offline(self, user_id: str) -> bool:
        """The user chose the "offline" status: to callers they are not there."""


#: How many ended call ids a registry remembers (see ``CallRegistry.restore``).
_ENDED_KEPT = 1000


class CallRegistry:
    def __init__(
        self,
        directory: Directory,
        new_id: Callable[[], str],
        ring_timeout: float = 30.0,
        require_shared_room: bool = True,
    ) -> None:
        self.directory = directory
        self.ring_timeout = ring_timeout
        self.require_shared_room = require_shared_room
        self._new_id = new_id
        self._calls: dict[str, Call] = {}
        self._call_of_user: dict[str, str] = {}  # users with a ringing or active call
        self._deadlines: list[tuple[float, str]] = []
        # Calls that ended lately (oldest first): a snapshot taken before its
        # end reached the sending node must not bring one back.
        self._ended: dict[str, None] = {}

    # -- lookups -------------------------------------------------------------------------

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def call_of(self, user_id: str) -> Call | None:
        call_id = self._call_of_user.get(user_id)
        return None if call_id is None else self._calls[call_id]

    def active_count(self) -> int:
        return len(self._calls)

    def calls(self) -> list[Call]:
        """Every ringing or active call."""
        return list(self._calls.values())

    def drop(self, call_id: str, wall_ms: int) -> list[CallEffect]:
        """End a call another replica no longer has, as if its parties disconnected."""
        call = self._calls.get(call_id)
        if call is None:
            return []
        return self._end(call, "disconnected", wall_ms, sender=None)

    def restore(self, call: Call) -> None:
        """Take over a call another replica knows and this one does not."""
        if call.id in self._calls or call.id in self._ended:
            return
        self._calls[call.id] = call
        self._call_of_user[call.caller] = call.id
        self._call_of_user[call.callee] = call.id
        if call.state is CallState.RINGING:
            heapq.heappush(self._deadlines, (call.ring_deadline, call.id))

    def find(self, call_id: str | None, user_id: str, peer: str | None, request_type: str) -> Call:
        """The call a request refers to, checked to be ``user_id``'s and with ``peer``.

        Seed clients know nothing of call ids, so a request without one refers
        to the sender's current call with ``peer``, if there is exactly that.
        """
        if call_id is None:
            call = self.call_of(user_id)
            if call is None or peer is None or call.peer_of(user_id) != peer:
                raise ProtocolError(
                    ErrorCode.INVALID_MESSAGE, "payload: missing call_id", request_type
                )
            return call
        call = self._calls.get(call_id)
        if call is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"call {call_id} not found", request_type)
        if user_id not in (call.caller, call.callee):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not a party to call {call_id}", request_type)
        if peer is not None and call.peer_of(user_id) != peer:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE,
                f"payload.to_user_id: call {call_id} is with {call.peer_of(user_id)!r}",
                request_type,
            )
        return call

    # -- events --------------------------------------------------------------------------

    def offer(
        self,
        conn_id: str,
        caller: str,
        callee: str,
        data: msgspec.Raw,
        media: msgspec.Raw,
        now: float,
        wall_ms: int,
        call_id: str | None = None,
    ) -> list[CallEffect]:
        """A new call: ``webrtc`` offer without a ``call_id``.

        ``call_id`` is given when the id was drawn elsewhere (by the node that
        received the offer, so that every replica names the call alike).
        """
        if callee == caller:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, "payload.to_user_id: cannot call yourself", "webrtc"
            )
        call = Call(
            id=call_id or self._new_id(),
            caller=caller,
            callee=callee,
            caller_conn=conn_id,
            media=media,
            started_at=wall_ms,
            ring_deadline=now + self.ring_timeout,
        )
        callee_conns = (
            () if self.directory.appears_offline(callee) else self.directory.connections_of(callee)
        )
        if not callee_conns:
            return self._refuse(call, "unavailable", wall_ms)
        if self.require_shared_room and not self.directory.shares_room(caller, callee):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"you share no room with {callee!r}", "webrtc")
        theirs = self.call_of(callee)
        if (
            theirs is not None
            and theirs.state is CallState.RINGING
            and theirs.caller == callee
            and theirs.callee == caller
        ):
            return self._refuse(call, "glare", wall_ms)
        if theirs is not None or self.call_of(caller) is not None:
            return self._refuse(call, "busy", wall_ms)

        call.ringing_conns = set(callee_conns)
        self._calls[call.id] = call
        self._call_of_user[caller] = call.id
        self._call_of_user[callee] = call.id
        heapq.heappush(self._deadlines, (call.ring_deadline, call.id))
        ringing = tuple(sorted(call.ringing_conns))
        return [
            record_of(call),
            ToConnections(
                (conn_id,),
                CallRinging(call_id=call.id, from_user_id=caller, to_user_id=callee, media=media),
            ),
            ToConnections(
                ringing,
                IncomingCall(call_id=call.id, from_user_id=caller, to_user_id=callee, media=media),
            ),
            ToConnections(ringing, self._signal(call, "offer", caller, data)),
        ]

    def _refuse(self, call: Call, reason: CallEndReason, wall_ms: int) -> list[CallEffect]:
        """An attempt that never rings; it is still a call in the caller's history."""
        call.state = CallState.ENDED
        call.ended_at = wall_ms
        call.end_reason = reason
        return [
            record_of(call),
            ToConnections((call.caller_conn,), CallEnded(call_id=call.id, reason=reason)),
        ]

    def signal(
        self,
        conn_id: str,
        user_id: str,
        kind: SignalKind,
        call: Call,
        data: msgspec.Raw,
        wall_ms: int,
    ) -> list[CallEffect]:
        """``webrtc`` answer, ice_candidate or renegotiation offer within ``call``."""
        if call.state is CallState.RINGING and kind == "answer":
            return self._answer(conn_id, user_id, call, data, wall_ms)
        if call.state is CallState.RINGING:
            if kind != "ice_candidate":
                raise ProtocolError(
                    ErrorCode.FORBIDDEN, f"call {call.id} is not answered yet", "webrtc"
                )
            if conn_id == call.caller_conn:
                targets = tuple(sorted(call.ringing_conns))
            elif conn_id in call.ringing_conns:
                targets = (call.caller_conn,)
            else:
                raise ProtocolError(
                    ErrorCode.FORBIDDEN, "this connection is not part of the call", "webrtc"
                )
            return [ToConnections(targets, self._signal(call, kind, user_id, data))]
        # ACTIVE: everything is relayed between the two connections of the call.
        if conn_id == call.caller_conn and call.callee_conn is not None:
            target = call.callee_conn
        elif conn_id == call.callee_conn:
            target = call.caller_conn
        else:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "this connection is not part of the call", "webrtc"
            )
        return [ToConnections((target,), self._signal(call, kind, user_id, data))]

    def _answer(
        self, conn_id: str, user_id: str, call: Call, data: msgspec.Raw, wall_ms: int
    ) -> list[CallEffect]:
        if user_id != call.callee or conn_id not in call.ringing_conns:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "only a ringing callee connection can answer", "webrtc"
            )
        call.state = CallState.ACTIVE
        call.callee_conn = conn_id
        call.answered_at = wall_ms
        elsewhere = tuple(sorted(call.ringing_conns - {conn_id}))
        call.ringing_conns = set()
        active = CallActive(call_id=call.id, from_user_id=call.caller, to_user_id=call.callee)
        effects: list[CallEffect] = [
            record_of(call),
            ToConnections((call.caller_conn,), self._signal(call, "answer", user_id, data)),
            ToConnections((call.caller_conn, conn_id), active),
        ]
        if elsewhere:
            effects.append(
                ToConnections(elsewhere, CallEnded(call_id=call.id, reason="answered_elsewhere"))
            )
        return effects

    def reject(self, conn_id: str, user_id: str, call: Call, wall_ms: int) -> list[CallEffect]:
        if user_id != call.callee or call.state is not CallState.RINGING:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                "only the callee can reject, and only while it rings",
                "call_reject",
            )
        if conn_id not in call.ringing_conns:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "this connection is not ringing", "call_reject"
            )
        return self._end(call, "rejected", wall_ms, sender=conn_id)

    def hang_up(self, conn_id: str, user_id: str, call: Call, wall_ms: int) -> list[CallEffect]:
        if conn_id not in call.party_conns():
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "this connection is not part of the call", "call_end"
            )
        return self._end(call, "ended", wall_ms, sender=conn_id, by=user_id)

    def disconnected(self, conn_id: str, wall_ms: int) -> list[CallEffect]:
        """A connection went away: end or thin out every call it was part of."""
        effects: list[CallEffect] = []
        for call in list(self._calls.values()):
            if conn_id in (call.caller_conn, call.callee_conn):
                effects.extend(self._end(call, "disconnected", wall_ms, sender=conn_id))
            elif conn_id in call.ringing_conns:
                call.ringing_conns.discard(conn_id)
                if not call.ringing_conns:
                    effects.extend(self._end(call, "disconnected", wall_ms, sender=conn_id))
        return effects

    def expire(self, now: float, wall_ms: int) -> list[CallEffect]:
        """Calls ringing past their deadline end with ``no_answer``."""
        effects: list[CallEffect] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, call_id = heapq.heappop(self._deadlines)
            call = self._calls.get(call_id)
            if call is not None and call.state is CallState.RINGING:
                effects.extend(self._end(call, "no_answer", wall_ms, sender=None))
        return effects

    def next_deadline(self) -> float | None:
        while self._deadlines:
            deadline, call_id = self._deadlines[0]
            call = self._calls.get(call_id)
            if call is not None and call.state is CallState.RINGING:
                return deadline
            heapq.heappop(self._deadlines)
        return None

    # -- internals -------------------------------------------------------------------------

    def _end(
        self,
        call: Call,
        reason: CallEndReason,
        wall_ms: int,
        sender: str | None,
        by: str | None = None,
    ) -> list[CallEffect]:
        recipients = tuple(sorted(call.party_conns() - {sender} if sender else call.party_conns()))
        call.state = CallState.ENDED
        call.ended_at = wall_ms
        call.end_reason = reason
        call.ringing_conns = set()
        del self._calls[call.id]
        self._ended[call.id] = None
        if len(self._ended) > _ENDED_KEPT:
            del self._ended[next(iter(self._ended))]
        for user in (call.caller, call.callee):
            if self._call_of_user.get(user) == call.id:
                del self._call_of_user[user]
        effects: list[CallEffect] = [record_of(call)]
        if recipients:
            effects.append(
                ToConnections(recipients, CallEnded(call_id=call.id, reason=reason, by=by))
            )
        return effects

    @staticmethod
    def _signal(call: Call, kind: SignalKind, sender: str, data: msgspec.Raw) -> WebRTCSignal:
        return WebRTCSignal(
            type=kind,
            call_id=call.id,
            from_user_id=sender,
            to_user_id=call.peer_of(sender),
            data=data,
        )
