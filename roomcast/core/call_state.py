"""A call's data: the live session the registry keeps, and the record that is stored.

Apart from :class:`~roomcast.core.calls.CallRegistry`, because stores, the
HTTP call history and replicas taking over a call need these types without
the state machine.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import msgspec

from roomcast.core.deliveries import Delivery
from roomcast.protocol import CallEndReason


class CallState(enum.Enum):
    RINGING = "ringing"
    ACTIVE = "active"
    ENDED = "ended"


@dataclass(slots=True)
class Call:
    id: str
    caller: str
    callee: str
    caller_conn: str
    media: msgspec.Raw
    started_at: int  # wall clock, ms
    ring_deadline: float  # monotonic
    ringing_conns: set[str] = field(default_factory=set)
    callee_conn: str | None = None
    state: CallState = CallState.RINGING
    answered_at: int | None = None
    ended_at: int | None = None
    end_reason: CallEndReason | None = None

    def party_conns(self) -> set[str]:
        """Every connection that is ringing for or taking part in the call."""
        conns = {self.caller_conn, *self.ringing_conns}
        if self.callee_conn is not None:
            conns.add(self.callee_conn)
        return conns

    def peer_of(self, user_id: str) -> str:
        return self.callee if user_id == self.caller else self.caller


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call as it should be stored now (insert or update by id); also its HTTP shape."""

    call_id: str
    caller: str
    callee: str
    started_at: int
    answered_at: int | None
    ended_at: int | None
    end_reason: CallEndReason | None


CallEffect = Delivery | CallRecord


def record_of(call: Call) -> CallRecord:
    return CallRecord(
        call.id,
        call.caller,
        call.callee,
        call.started_at,
        call.answered_at,
        call.ended_at,
        call.end_reason,
    )
