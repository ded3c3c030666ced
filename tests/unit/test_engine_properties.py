"""Random sequences of events against the chat engine: its invariants always hold.

A model keeps, independently of the engine, which connection is in which room.
After every step the engine's view must agree with it, and the deliveries of
that step must obey the protocol's rules: a user is announced once per room
however many tabs they use, nobody outside a room hears of it, and typing
never outlives membership.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from roomcast.core.deliveries import Delivery, ToConnections, ToRoom
from roomcast.core.engine import ChatEngine
from roomcast.protocol import ChatMessage, Presence, ProtocolError, Typing, UserJoined, UserLeft

USERS = ["ann", "bob", "cy"]
ROOMS = [1, 2, 3]


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = ChatEngine(typing_timeout=3.0)
        self.now = 0.0
        self.next_conn = 0
        self.user_of: dict[str, str] = {}
        self.rooms_of: dict[str, set[int]] = {}
        # Announced presence per (room, user): joins minus leaves seen by others.
        self.announced: Counter[tuple[int, str]] = Counter()
        self.message_id = 0
        self.user_before: dict[str, str] = {}

    # -- helpers -------------------------------------------------------------------------

    def members(self, room: int) -> set[str]:
        return {c for c, rooms in self.rooms_of.items() if room in rooms}

    def users_in(self, room: int) -> set[str]:
        return {self.user_of[c] for c in self.members(room)}

    def check(self, deliveries: list[Delivery], before: dict[int, set[str]]) -> None:
        """Rules every batch of deliveries follows, given room membership before it."""
        for delivery in deliveries:
            event = delivery.event
            if isinstance(delivery, ToRoom):
                room = delivery.room_id
                if isinstance(event, UserJoined):
                    key = (room, event.user_id)
                    assert self.announced[key] == 0, f"{key} announced twice"
                    self.announced[key] = 1
                elif isinstance(event, UserLeft):
                    key = (room, event.user_id)
                    assert self.announced[key] == 1, f"{key} left without joining"
                    self.announced[key] = 0
                    assert event.user_id not in self.users_in(room)
                elif isinstance(event, Typing):
                    assert delivery.except_user == event.user_id
                    if event.is_typing:
                        assert event.user_id in self.users_in(room)
            elif isinstance(delivery, ToConnections):
                for conn in delivery.conn_ids:
                    assert conn in self.user_of, "delivery to a closed connection"
                if isinstance(event, Presence):
                    # Only people who shared a room with the subject (before this
                    # step) hear of it, and the subject's own tabs.
                    rooms_of_subject = {
                        room
                        for room, members in before.items()
                        if any(self.user_before[m] == event.user_id for m in members)
                    }
                    audience = {
                        self.user_before[m] for room in rooms_of_subject for m in before[room]
                    } | {event.user_id}
                    for conn in delivery.conn_ids:
                        assert self.user_of[conn] in audience

    def snapshot(self) -> dict[int, set[str]]:
        self.user_before = dict(self.user_of)
        return {room: set(self.members(room)) for room in ROOMS}

    # -- rules -----------------------------------------------------------------------------

    @rule(user=st.sampled_from(USERS))
    def open(self, user: str) -> None:
        conn = f"c{self.next_conn}"
        self.next_conn += 1
        self.engine.open(conn, user)
        self.user_of[conn] = user
        self.rooms_of[conn] = set()

    @precondition(lambda self: self.user_of)
    @rule(data=st.data(), room=st.sampled_from(ROOMS))
    def join(self, data: st.DataObject, room: int) -> None:
        conn = data.draw(st.sampled_from(sorted(self.user_of)))
        before = self.snapshot()
        self.rooms_of[conn].add(room)
        self.check(self.engine.join(conn, room), before)

    @precondition(lambda self: self.user_of)
    @rule(data=st.data(), room=st.one_of(st.none(), st.sampled_from(ROOMS)))
    def leave(self, data: st.DataObject, room: int | None) -> None:
        conn = data.draw(st.sampled_from(sorted(self.user_of)))
        before = self.snapshot()
        try:
            deliveries = self.engine.leave(conn, room, self.now)
        except ProtocolError:
            assert room is not None and room not in self.rooms_of[conn]
            return
        if room is None:
            self.rooms_of[conn].clear()
        else:
            self.rooms_of[conn].discard(room)
        self.check(deliveries, before)

    @precondition(lambda self: self.user_of)
    @rule(data=st.data(), room=st.sampled_from(ROOMS), on=st.booleans())
    def typing(self, data: st.DataObject, room: int, on: bool) -> None:
        conn = data.draw(st.sampled_from(sorted(self.user_of)))
        try:
            deliveries = self.engine.set_typing(conn, room, on, self.now)
        except ProtocolError:
            assert room not in self.rooms_of[conn]
            return
        self.check(deliveries, self.snapshot())

    @precondition(lambda self: self.user_of)
    @rule(data=st.data(), room=st.sampled_from(ROOMS))
    def chat(self, data: st.DataObject, room: int) -> None:
        conn = data.draw(st.sampled_from(sorted(self.user_of)))
        try:
            user = self.engine.require_member(conn, room, "chat")
        except ProtocolError:
            assert room not in self.rooms_of[conn]
            return
        self.message_id += 1
        message = ChatMessage(
            id=self.message_id,
            room_id=room,
            user_id=user,
            content="x",
            type="text",
            created_at=0,
            thread_id=None,
            mentions=[],
        )
        deliveries = self.engine.message_stored(message)
        assert all(isinstance(d.event, Typing) and not d.event.is_typing for d in deliveries)
        self.check(deliveries, self.snapshot())
        assert not self.engine.typing.is_typing((room, user))

    @precondition(lambda self: self.user_of)
    @rule(data=st.data(), status=st.sampled_from(["online", "away", "busy", "offline"]))
    def status(self, data: st.DataObject, status: str) -> None:
        conn = data.draw(st.sampled_from(sorted(self.user_of)))
        self.check(self.engine.set_status(conn, status), self.snapshot())  # type: ignore[arg-type]

    @precondition(lambda self: self.user_of)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.user_of)))
        before = self.snapshot()
        user = self.user_of[conn]
        last = sum(1 for c, u in self.user_of.items() if u == user) == 1
        del self.rooms_of[conn]
        del self.user_of[conn]
        deliveries = self.engine.close(conn, self.now)
        self.check(deliveries, before)
        offline = [d for d in deliveries if isinstance(d.event, Presence)]
        assert bool(offline) <= last
        assert self.engine.presence.is_online(user) is not last

    @rule(seconds=st.floats(min_value=0.1, max_value=5.0))
    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.check(self.engine.expire(self.now), self.snapshot())

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def room_users_match_the_model(self) -> None:
        for room in ROOMS:
            listed = [u.user_id for u in self.engine.room_users(room).users]
            assert sorted(listed) == sorted(self.users_in(room))
            assert set(self.engine.rooms.connections(room)) == self.members(room)

    @invariant()
    def announcements_match_presence_in_rooms(self) -> None:
        for room in ROOMS:
            for user in USERS:
                assert self.announced[(room, user)] <= 1

    @invariant()
    def typing_only_for_members(self) -> None:
        for room in ROOMS:
            for user in USERS:
                if self.engine.typing.is_typing((room, user)):
                    assert user in self.users_in(room)


EngineMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_engine_state_machine = EngineMachine.TestCase
