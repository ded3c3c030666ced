"""The chat engine's rules, driven directly with a controlled clock."""

from __future__ import annotations

import pytest

from roomcast.core.deliveries import ToConnections, ToRoom
from roomcast.core.engine import ChatEngine
from roomcast.protocol import (
    ChatMessage,
    ErrorCode,
    Presence,
    ProtocolError,
    RoomUser,
    RoomUsers,
    Typing,
    UserJoined,
    UserLeft,
)


def engine_with(*conns: tuple[str, str]) -> ChatEngine:
    engine = ChatEngine(typing_timeout=3.0)
    for conn_id, user_id in conns:
        engine.open(conn_id, user_id)
    return engine


def test_first_join_announces_user_and_lists_members() -> None:
    engine = engine_with(("a1", "alice"), ("b1", "bob"))
    engine.join("a1", 7)
    deliveries = engine.join("b1", 7)
    assert deliveries == [
        ToRoom(7, UserJoined(room_id=7, user_id="bob"), except_user="bob"),
        ToConnections(
            ("b1",),
            RoomUsers(
                room_id=7,
                users=[RoomUser("alice", "online"), RoomUser("bob", "online")],
            ),
        ),
    ]


def test_second_connection_of_a_user_joins_and_leaves_silently() -> None:
    engine = engine_with(("a1", "alice"), ("a2", "alice"), ("b1", "bob"))
    engine.join("b1", 7)
    assert len(engine.join("a1", 7)) == 2  # user_joined + room_users
    second = engine.join("a2", 7)
    assert [type(d.event) for d in second] == [RoomUsers]
    assert engine.leave("a1", 7, now=0) == []
    assert engine.leave("a2", 7, now=0) == [ToRoom(7, UserLeft(room_id=7, user_id="alice"))]


def test_joining_twice_is_idempotent() -> None:
    engine = engine_with(("a1", "alice"))
    engine.join("a1", 7)
    assert [type(d.event) for d in engine.join("a1", 7)] == [RoomUsers]


def test_leave_without_room_leaves_every_room_in_order() -> None:
    engine = engine_with(("a1", "alice"))
    engine.join("a1", 9)
    engine.join("a1", 3)
    assert engine.leave("a1", None, now=0) == [
        ToRoom(3, UserLeft(room_id=3, user_id="alice")),
        ToRoom(9, UserLeft(room_id=9, user_id="alice")),
    ]
    assert engine.rooms.rooms_of("a1") == frozenset()


def test_leaving_a_room_not_joined_is_not_found() -> None:
    engine = engine_with(("a1", "alice"))
    with pytest.raises(ProtocolError) as info:
        engine.leave("a1", 5, now=0)
    assert info.value.code is ErrorCode.NOT_FOUND


def test_unknown_user_is_unauthenticated() -> None:
    engine = ChatEngine()
    engine.open("x", None)
    with pytest.raises(ProtocolError) as info:
        engine.join("x", 1)
    assert info.value.code is ErrorCode.UNAUTHENTICATED
    engine.identify("x", "xavier")
    assert engine.user_of("x") == "xavier"
    with pytest.raises(ValueError):
        engine.identify("x", "other")


def test_non_member_may_not_post() -> None:
    engine = engine_with(("a1", "alice"))
    with pytest.raises(ProtocolError) as info:
        engine.require_member("a1", 4, "chat")
    assert (info.value.code, info.value.type) == (ErrorCode.FORBIDDEN, "chat")


def test_a_connection_the_replica_has_not_seen_yet_is_not_a_member() -> None:
    # A cluster node's replica learns of a new connection from the log, maybe
    # after the connection's first request: the answer is forbidden all the same.
    engine = ChatEngine()
    with pytest.raises(ProtocolError) as info:
        engine.require_member("unseen", 4, "chat")
    assert (info.value.code, info.value.type) == (ErrorCode.FORBIDDEN, "chat")


def typing_event(room: int, user: str, on: bool) -> ToRoom:
    return ToRoom(room, Typing(room_id=room, user_id=user, is_typing=on), except_user=user)


def test_typing_is_sent_once_and_expires_after_timeout() -> None:
    engine = engine_with(("a1", "alice"))
    engine.join("a1", 1)
    assert engine.set_typing("a1", 1, True, now=10.0) == [typing_event(1, "alice", True)]
    assert engine.set_typing("a1", 1, True, now=11.0) == []  # refreshes, not re-sent
    assert engine.next_deadline() == 14.0
    assert engine.expire(13.9) == []
    assert engine.expire(14.0) == [typing_event(1, "alice", False)]
    assert engine.next_deadline() is None
    assert engine.set_typing("a1", 1, False, now=15.0) == []  # not typing: nothing to stop


def test_chat_message_ends_typing_before_it_is_delivered() -> None:
    engine = engine_with(("a1", "alice"))
    engine.join("a1", 1)
    engine.set_typing("a1", 1, True, now=0)
    message = ChatMessage(
        id=1,
        room_id=1,
        user_id="alice",
        content="hi",
        type="text",
        created_at=5,
        thread_id=None,
        mentions=[],
    )
    assert engine.message_stored(message) == [typing_event(1, "alice", False)]
    assert engine.expire(100) == []
    assert engine.message_stored(message) == []  # no typing to end any more


def test_disconnect_ends_typing_leaves_rooms_and_goes_offline() -> None:
    engine = engine_with(("a1", "alice"), ("b1", "bob"))
    engine.join("a1", 1)
    engine.join("b1", 1)
    engine.set_typing("a1", 1, True, now=0)
    assert engine.close("a1", now=1) == [
        typing_event(1, "alice", False),
        ToRoom(1, UserLeft(room_id=1, user_id="alice")),
        ToConnections(("b1",), Presence(user_id="alice", status="offline")),
    ]
    assert engine.presence.is_online("alice") is False
    assert engine.close("a1", now=2) == []  # closing twice is harmless


def test_disconnect_of_one_tab_keeps_user_present() -> None:
    engine = engine_with(("a1", "alice"), ("a2", "alice"), ("b1", "bob"))
    for conn in ("a1", "a2", "b1"):
        engine.join(conn, 1)
    assert engine.close("a1", now=0) == []
    assert [u.user_id for u in engine.room_users(1).users] == ["alice", "bob"]


def test_status_goes_to_users_sharing_a_room_and_own_tabs_only() -> None:
    engine = engine_with(("a1", "alice"), ("a2", "alice"), ("b1", "bob"), ("c1", "carol"))
    engine.join("a1", 1)
    engine.join("b1", 1)
    engine.join("c1", 2)
    [delivery] = engine.set_status("a1", "away")
    assert isinstance(delivery, ToConnections)
    assert sorted(delivery.conn_ids) == ["a1", "a2", "b1"]
    assert delivery.event == Presence(user_id="alice", status="away")
    assert engine.set_status("a2", "away") == []  # unchanged: nothing sent
    assert engine.room_users(1).users[0] == RoomUser("alice", "away")


def test_shares_room() -> None:
    engine = engine_with(("a1", "alice"), ("b1", "bob"), ("c1", "carol"))
    engine.join("a1", 1)
    engine.join("b1", 1)
    engine.join("c1", 2)
    assert engine.shares_room("alice", "bob")
    assert not engine.shares_room("alice", "carol")


def test_closing_the_typing_tab_ends_typing_though_another_tab_stays() -> None:
    engine = engine_with(("a1", "alice"), ("a2", "alice"), ("b1", "bob"))
    for conn in ("a1", "a2", "b1"):
        engine.join(conn, 1)
    engine.set_typing("a1", 1, True, now=0)
    assert engine.close("a1", now=1) == [typing_event(1, "alice", False)]  # a2 stays
    assert engine.expire(100) == []


def test_closing_another_tab_leaves_typing_alone() -> None:
    engine = engine_with(("a1", "alice"), ("a2", "alice"), ("a3", "alice"))
    for conn in ("a1", "a2", "a3"):
        engine.join(conn, 1)
    engine.set_typing("a1", 1, True, now=0)
    assert engine.close("a2", now=1) == []
    assert engine.typing.is_typing((1, "alice"))


def test_leaving_the_room_from_the_typing_tab_ends_typing_though_another_tab_stays() -> None:
    engine = engine_with(("a1", "alice"), ("a2", "alice"), ("b1", "bob"))
    for conn in ("a1", "a2", "b1"):
        engine.join(conn, 1)
    engine.set_typing("a1", 1, True, now=0)
    assert engine.leave("a1", 1, now=1) == [typing_event(1, "alice", False)]  # a2 stays
    assert engine.typing_rooms("a1") == ()
    assert engine.expire(100) == []


def test_room_users_come_in_pages_by_user_id() -> None:
    names = ["erin", "bob", "dave", "alice", "carol"]
    engine = engine_with(*((f"{name}-1", name) for name in names), ("bob-2", "bob"))
    for conn in [f"{name}-1" for name in names] + ["bob-2"]:
        engine.join(conn, 7)
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        page, more = engine.room_users_page(7, after, 2)
        pages.append([user.user_id for user in page])
        if not more:
            break
        after = page[-1].user_id
    assert pages == [["alice", "bob"], ["carol", "dave"], ["erin"]]
    assert engine.room_users_page(7, "erin", 2) == ([], False)
    assert engine.room_users_page(8, None, 2) == ([], False)
