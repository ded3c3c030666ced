"""The call state machine: every transition and reason, with a controlled clock."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import msgspec
import pytest

from roomcast.core.calls import CallEffect, CallRecord, CallRegistry, CallState
from roomcast.core.deliveries import ToConnections
from roomcast.protocol import (
    NULL,
    CallActive,
    CallEnded,
    CallRinging,
    ErrorCode,
    Event,
    IncomingCall,
    ProtocolError,
    WebRTCSignal,
)

SDP = msgspec.Raw(b'{"type":"offer","sdp":"v=0"}')
ANSWER = msgspec.Raw(b'{"type":"answer","sdp":"v=0"}')
CAND = msgspec.Raw(b'{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host"}')


class Directory:
    """Who is connected where, and who shares a room: set directly by each test."""

    def __init__(self) -> None:
        self.conns: dict[str, tuple[str, ...]] = {}
        self.shared: set[frozenset[str]] = set()
        self.invisible: set[str] = set()

    def connections_of(self, user_id: str) -> tuple[str, ...]:
        return self.conns.get(user_id, ())

    def shares_room(self, user_a: str, user_b: str) -> bool:
        return frozenset((user_a, user_b)) in self.shared

    def appears_offline(self, user_id: str) -> bool:
        return user_id in self.invisible


@pytest.fixture
def directory() -> Directory:
    d = Directory()
    d.conns = {"ann": ("a1", "a2"), "bob": ("b1", "b2"), "cy": ("c1",)}
    d.shared = {frozenset(p) for p in (("ann", "bob"), ("ann", "cy"), ("bob", "cy"))}
    return d


@pytest.fixture
def registry(directory: Directory) -> CallRegistry:
    ids = (f"call{i}" for i in itertools.count(1))
    return CallRegistry(directory, new_id=lambda: next(ids), ring_timeout=30.0)


def sent(effects: Sequence[CallEffect]) -> list[tuple[tuple[str, ...], Event]]:
    return [(e.conn_ids, e.event) for e in effects if isinstance(e, ToConnections)]


def records(effects: Sequence[CallEffect]) -> list[CallRecord]:
    return [e for e in effects if isinstance(e, CallRecord)]


def ring(registry: CallRegistry, now: float = 0.0) -> str:
    effects = registry.offer("a1", "ann", "bob", SDP, NULL, now=now, wall_ms=1000)
    [record] = records(effects)
    return record.call_id


def test_offer_rings_every_callee_connection_and_tells_the_caller_the_id(
    registry: CallRegistry,
) -> None:
    effects = registry.offer("a1", "ann", "bob", SDP, NULL, now=0, wall_ms=1000)
    assert sent(effects) == [
        (("a1",), CallRinging(call_id="call1", from_user_id="ann", to_user_id="bob", media=NULL)),
        (
            ("b1", "b2"),
            IncomingCall(call_id="call1", from_user_id="ann", to_user_id="bob", media=NULL),
        ),
        (
            ("b1", "b2"),
            WebRTCSignal(
                type="offer", call_id="call1", from_user_id="ann", to_user_id="bob", data=SDP
            ),
        ),
    ]
    assert records(effects) == [CallRecord("call1", "ann", "bob", 1000, None, None, None)]
    assert registry.get("call1").state is CallState.RINGING  # type: ignore[union-attr]


def test_answer_connects_two_connections_and_releases_the_other_devices(
    registry: CallRegistry,
) -> None:
    call_id = ring(registry)
    call = registry.find(call_id, "bob", "ann", "webrtc")
    effects = registry.signal("b2", "bob", "answer", call, ANSWER, wall_ms=2000)
    active = CallActive(call_id=call_id, from_user_id="ann", to_user_id="bob")
    assert sent(effects) == [
        (
            ("a1",),
            WebRTCSignal(
                type="answer", call_id=call_id, from_user_id="bob", to_user_id="ann", data=ANSWER
            ),
        ),
        (("a1", "b2"), active),
        (("b1",), CallEnded(call_id=call_id, reason="answered_elsewhere")),
    ]
    assert records(effects)[0].answered_at == 2000
    # From now on only a1 <-> b2 exchange signaling.
    ice = registry.signal("a1", "ann", "ice_candidate", call, CAND, wall_ms=2001)
    assert [c for c, _ in sent(ice)] == [("b2",)]
    renegotiate = registry.signal("b2", "bob", "offer", call, SDP, wall_ms=2002)
    assert [c for c, _ in sent(renegotiate)] == [("a1",)]
    for conn, user in (("b1", "bob"), ("a2", "ann")):
        with pytest.raises(ProtocolError) as info:
            registry.signal(conn, user, "ice_candidate", call, CAND, wall_ms=2003)
        assert info.value.code is ErrorCode.FORBIDDEN


def test_candidates_before_the_answer_reach_all_ringing_devices(registry: CallRegistry) -> None:
    call = registry.find(ring(registry), "ann", "bob", "webrtc")
    assert [c for c, _ in sent(registry.signal("a1", "ann", "ice_candidate", call, CAND, 0))] == [
        ("b1", "b2")
    ]
    assert [c for c, _ in sent(registry.signal("b1", "bob", "ice_candidate", call, CAND, 0))] == [
        ("a1",)
    ]
    with pytest.raises(ProtocolError):  # a renegotiation before any answer
        registry.signal("a1", "ann", "offer", call, SDP, 0)
    with pytest.raises(ProtocolError):  # the caller cannot answer its own call
        registry.signal("a1", "ann", "answer", call, ANSWER, 0)


def test_reject_ends_the_call_for_everyone_but_the_rejecting_device(
    registry: CallRegistry,
) -> None:
    call_id = ring(registry)
    call = registry.find(call_id, "bob", None, "call_reject")
    with pytest.raises(ProtocolError):
        registry.reject("a1", "ann", call, 0)  # only the callee rejects
    effects = registry.reject("b1", "bob", call, wall_ms=3000)
    assert sent(effects) == [(("a1", "b2"), CallEnded(call_id=call_id, reason="rejected"))]
    assert records(effects)[0].end_reason == "rejected"
    assert registry.get(call_id) is None
    assert registry.call_of("ann") is registry.call_of("bob") is None


@pytest.mark.parametrize(("conn", "user"), [("a1", "ann"), ("b2", "bob")])
def test_hang_up_by_either_party_says_who(registry: CallRegistry, conn: str, user: str) -> None:
    call_id = ring(registry)
    call = registry.find(call_id, "bob", "ann", "webrtc")
    registry.signal("b2", "bob", "answer", call, ANSWER, 0)
    other = "b2" if conn == "a1" else "a1"
    effects = registry.hang_up(conn, user, call, wall_ms=4000)
    assert sent(effects) == [((other,), CallEnded(call_id=call_id, reason="ended", by=user))]


def test_caller_cancels_while_ringing(registry: CallRegistry) -> None:
    call_id = ring(registry)
    call = registry.find(call_id, "ann", None, "call_end")
    effects = registry.hang_up("a1", "ann", call, 0)
    assert sent(effects) == [(("b1", "b2"), CallEnded(call_id=call_id, reason="ended", by="ann"))]
    with pytest.raises(ProtocolError):  # another tab of the caller is not in the call
        registry.hang_up("a2", "ann", registry.get(ring(registry)), 0)  # type: ignore[arg-type]


def test_ringing_times_out_with_no_answer(registry: CallRegistry) -> None:
    call_id = ring(registry, now=100.0)
    assert registry.next_deadline() == 130.0
    assert registry.expire(129.9, wall_ms=0) == []
    effects = registry.expire(130.0, wall_ms=9000)
    assert sent(effects) == [(("a1", "b1", "b2"), CallEnded(call_id=call_id, reason="no_answer"))]
    assert registry.next_deadline() is None


def test_answered_call_never_times_out(registry: CallRegistry) -> None:
    call = registry.find(ring(registry), "bob", "ann", "webrtc")
    registry.signal("b1", "bob", "answer", call, ANSWER, 0)
    assert registry.next_deadline() is None
    assert registry.expire(1e9, 0) == []


def test_offline_callee_is_unavailable_before_room_rules(
    registry: CallRegistry, directory: Directory
) -> None:
    directory.shared.clear()
    effects = registry.offer("a1", "ann", "zed", SDP, NULL, 0, 1000)
    [record] = records(effects)
    assert sent(effects) == [(("a1",), CallEnded(call_id=record.call_id, reason="unavailable"))]
    assert record.end_reason == "unavailable" and record.ended_at == 1000


def test_callee_sharing_no_room_is_forbidden(registry: CallRegistry, directory: Directory) -> None:
    directory.shared.discard(frozenset(("ann", "bob")))
    with pytest.raises(ProtocolError) as info:
        registry.offer("a1", "ann", "bob", SDP, NULL, 0, 0)
    assert info.value.code is ErrorCode.FORBIDDEN
    open_registry = CallRegistry(directory, lambda: "x", require_shared_room=False)
    assert sent(open_registry.offer("a1", "ann", "bob", SDP, NULL, 0, 0))


def test_calling_yourself_is_invalid(registry: CallRegistry) -> None:
    with pytest.raises(ProtocolError) as info:
        registry.offer("a1", "ann", "ann", SDP, NULL, 0, 0)
    assert info.value.code is ErrorCode.INVALID_MESSAGE


def test_busy_when_callee_rings_or_talks_or_caller_is_in_a_call(registry: CallRegistry) -> None:
    ring(registry)  # ann -> bob ringing
    busy = registry.offer("c1", "cy", "bob", SDP, NULL, 0, 0)
    assert sent(busy)[0][1] == CallEnded(call_id=records(busy)[0].call_id, reason="busy")
    busy_caller = registry.offer("a2", "ann", "cy", SDP, NULL, 0, 0)
    assert sent(busy_caller)[0][1].reason == "busy"  # type: ignore[union-attr]


def test_glare_refuses_the_later_call_and_keeps_the_first_ringing(
    registry: CallRegistry,
) -> None:
    first = ring(registry)  # ann -> bob
    effects = registry.offer("b1", "bob", "ann", SDP, NULL, 0, 0)
    assert sent(effects) == [
        (("b1",), CallEnded(call_id=records(effects)[0].call_id, reason="glare"))
    ]
    assert registry.get(first).state is CallState.RINGING  # type: ignore[union-attr]


@pytest.mark.parametrize("state", ["ringing", "active"])
def test_caller_disconnect_ends_call_in_every_state(registry: CallRegistry, state: str) -> None:
    call_id = ring(registry)
    if state == "active":
        call = registry.find(call_id, "bob", "ann", "webrtc")
        registry.signal("b1", "bob", "answer", call, ANSWER, 0)
    effects = registry.disconnected("a1", wall_ms=5000)
    expected = ("b1", "b2") if state == "ringing" else ("b1",)
    assert sent(effects) == [(expected, CallEnded(call_id=call_id, reason="disconnected"))]
    assert registry.call_of("bob") is None


def test_callee_disconnect_in_active_call_tells_the_caller(registry: CallRegistry) -> None:
    call_id = ring(registry)
    call = registry.find(call_id, "bob", "ann", "webrtc")
    registry.signal("b1", "bob", "answer", call, ANSWER, 0)
    assert registry.disconnected("b2", 0) == []  # the released device does not matter
    effects = registry.disconnected("b1", 0)
    assert sent(effects) == [(("a1",), CallEnded(call_id=call_id, reason="disconnected"))]


def test_ringing_devices_dropping_one_by_one(registry: CallRegistry) -> None:
    call_id = ring(registry)
    assert registry.disconnected("b1", 0) == []  # b2 still rings
    effects = registry.disconnected("b2", 0)
    assert sent(effects) == [(("a1",), CallEnded(call_id=call_id, reason="disconnected"))]


def test_lookup_rules(registry: CallRegistry) -> None:
    call_id = ring(registry)
    with pytest.raises(ProtocolError) as info:
        registry.find("nope", "ann", "bob", "webrtc")
    assert info.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(ProtocolError) as info:
        registry.find(call_id, "cy", "ann", "webrtc")
    assert info.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(ProtocolError) as info:
        registry.find(call_id, "ann", "cy", "webrtc")
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    # Seed clients without call ids: the sender's current call with that peer.
    assert registry.find(None, "bob", "ann", "webrtc").id == call_id
    with pytest.raises(ProtocolError):
        registry.find(None, "cy", "ann", "webrtc")


def test_a_callee_appearing_offline_is_unavailable(
    registry: CallRegistry, directory: Directory
) -> None:
    directory.invisible.add("bob")
    directory.shared.clear()  # and no room rule reveals that bob is connected
    effects = registry.offer("a1", "ann", "bob", SDP, NULL, 0, 0)
    assert sent(effects)[0][1].reason == "unavailable"  # type: ignore[union-attr]


def test_a_given_call_id_is_used_and_a_restored_call_can_be_dropped(
    registry: CallRegistry, directory: Directory
) -> None:
    registry.offer("a1", "ann", "bob", SDP, NULL, now=0, wall_ms=1000, call_id="from-node-a")
    call = registry.get("from-node-a")
    assert call is not None
    # Another replica takes the call over, then learns it is gone.
    other = CallRegistry(directory, new_id=lambda: "unused", ring_timeout=30.0)
    other.restore(call)
    assert other.call_of("bob") is call
    effects = other.drop("from-node-a", wall_ms=5000)
    assert sent(effects) == [
        (("a1", "b1", "b2"), CallEnded(call_id="from-node-a", reason="disconnected"))
    ]
    assert other.call_of("ann") is None and other.call_of("bob") is None
    assert other.drop("from-node-a", wall_ms=6000) == []


def test_a_call_that_ended_here_is_not_brought_back_by_an_older_snapshot(
    registry: CallRegistry,
) -> None:
    call_id = ring(registry)
    call = registry.get(call_id)
    assert call is not None
    registry.hang_up("a1", "ann", call, wall_ms=2000)
    registry.restore(call)  # a snapshot taken before the hang-up reached its node
    assert registry.get(call_id) is None
    assert registry.call_of("ann") is None and registry.call_of("bob") is None
