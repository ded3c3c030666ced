"""Bad input over the WebSocket: each gets exactly its error, and nothing else changes.

Every test sets up a room with a sender and an observer, sends something wrong,
checks the ``error`` frame field by field, and then proves nothing else
happened: the sender's next frame is the ``pong`` of a ping (the connection
still works and got no second frame), the observer's next frame is a marker
message sent afterwards (so nothing was relayed before it), and the room's
HTTP history holds only that marker (so nothing was stored).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.client import Client, Connect, expect_close, users, without_activity
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

UNKNOWN_MESSAGE_ID = 2**53 - 1  # the largest id there is

UserName = Callable[[str], str]


# -- helpers --------------------------------------------------------------------------


async def member_pair(connect: Connect, room_id: int, user: UserName) -> tuple[Client, Client]:
    """Alice (the sender) and Bob (the observer), both in ``room_id``, with nothing pending."""
    alice = await connect(user("alice"))
    bob = await connect(user("bob"))
    await alice.join(room_id)
    await bob.join(room_id)
    assert (await alice.recv("user_joined"))["payload"]["user_id"] == user("bob")
    return alice, bob


async def history(server: ServerProcess, room_id: int) -> list[dict[str, Any]]:
    status, page = await http_json("GET", f"{server.http}/api/rooms/{room_id}/messages")
    assert status == 200, page
    messages: list[dict[str, Any]] = page["messages"]
    return messages


def assert_error(payload: dict[str, Any], code: str, type: str | None, *names: str) -> None:
    """The error payload is exactly ``code`` (+ ``type``) and its message names ``names``."""
    expected = {"code": code, "message": payload.get("message")}
    if type is not None:
        expected["type"] = type
    assert payload == expected
    for name in names:
        assert name in payload["message"], (name, payload["message"])


async def assert_nothing_changed(
    server: ServerProcess,
    room_id: int,
    sender: Client,
    members: list[Client],
    stored: tuple[str, ...] = (),
) -> None:
    """``sender`` still works and got nothing more; ``members`` got nothing; nothing was stored.

    ``members[0]`` sends a marker chat message after the sender's ping round
    trip. Frames reach a connection in the order the server produced them and
    chat messages are published in commit order, so anything the bad request
    had caused would arrive at every member before the marker.
    """
    await sender.sync()
    marker = f"marker after bad input to room {room_id}"
    await members[0].send("chat", {"room_id": room_id, "content": marker})
    for member in members:
        frame = await member.recv("chat")
        assert frame["payload"]["content"] == marker, frame
    contents = [message["content"] for message in await history(server, room_id)]
    assert contents == [*stored, marker]


def chat(room_id: int, **payload: Any) -> str:
    return json.dumps({"type": "chat", "payload": {"room_id": room_id, **payload}})


# -- malformed frames -------------------------------------------------------------------

# (raw frame with {room} for the room id, code, payload type, substrings of the message)
MALFORMED: list[tuple[str, str, str, str | None, tuple[str, ...]]] = [
    ("not-json", "{", "invalid_json", None, ("JSON",)),
    ("empty-text-frame", "", "invalid_json", None, ("JSON",)),
    ("trailing-garbage", '{"type": "ping"} x', "invalid_json", None, ("JSON",)),
    ("array", "[1, 2]", "invalid_message", None, ("message", "object", "array")),
    ("string", '"chat"', "invalid_message", None, ("message", "object")),
    ("number", "5", "invalid_message", None, ("message", "object")),
    ("null", "null", "invalid_message", None, ("message", "object")),
    ("missing-type", '{"payload": {"room_id": {room}}}', "invalid_message", None, ("`type`",)),
    ("type-not-string", '{"type": 5}', "invalid_message", None, ("message.type",)),
    ("type-null", '{"type": null}', "invalid_message", None, ("message.type",)),
    (
        "payload-array",
        '{"type": "chat", "payload": []}',
        "invalid_message",
        "chat",
        ("payload", "object"),
    ),
    ("payload-missing", '{"type": "chat"}', "invalid_message", "chat", ("payload", "`room_id`")),
    (
        "room_id-string",
        '{"type": "chat", "payload": {"room_id": "{room}", "content": "x"}}',
        "invalid_message",
        "chat",
        ("payload.room_id",),
    ),
    (
        "room_id-bool",
        '{"type": "chat", "payload": {"room_id": true, "content": "x"}}',
        "invalid_message",
        "chat",
        ("payload.room_id",),
    ),
    (
        "room_id-float",
        '{"type": "chat", "payload": {"room_id": {room}.0, "content": "x"}}',
        "invalid_message",
        "chat",
        ("payload.room_id",),
    ),
    (
        "room_id-fraction",
        '{"type": "chat", "payload": {"room_id": 1.5, "content": "x"}}',
        "invalid_message",
        "chat",
        ("payload.room_id",),
    ),
    (
        "room_id-zero",
        '{"type": "chat", "payload": {"room_id": 0, "content": "x"}}',
        "invalid_message",
        "chat",
        ("payload.room_id",),
    ),
    (
        "room_id-negative",
        '{"type": "chat", "payload": {"room_id": -{room}, "content": "x"}}',
        "invalid_message",
        "chat",
        ("payload.room_id",),
    ),
    (
        "room_id-over-int64",
        '{"type": "chat", "payload": {"room_id": 9223372036854775808, "content": "x"}}',
        "invalid_message",
        "chat",
        ("payload.room_id",),
    ),
    (
        "room_id-null",
        '{"type": "chat", "payload": {"room_id": null, "content": "x"}}',
        "invalid_message",
        "chat",
        ("payload.room_id",),
    ),
    (
        "room_id-missing",
        '{"type": "chat", "payload": {"content": "x"}}',
        "invalid_message",
        "chat",
        ("payload", "`room_id`"),
    ),
    (
        "content-missing",
        '{"type": "chat", "payload": {"room_id": {room}}}',
        "invalid_message",
        "chat",
        ("payload", "`content`"),
    ),
    (
        "content-number",
        '{"type": "chat", "payload": {"room_id": {room}, "content": 5}}',
        "invalid_message",
        "chat",
        ("payload.content",),
    ),
    (
        "chat-kind-unknown",
        '{"type": "chat", "payload": {"room_id": {room}, "content": "x", "type": "image"}}',
        "invalid_message",
        "chat",
        ("payload.type",),
    ),
    (
        "user_id-number",
        '{"type": "chat", "payload": {"room_id": {room}, "content": "x", "user_id": 5}}',
        "invalid_message",
        "chat",
        ("payload.user_id",),
    ),
    (
        "user_id-control-char",
        '{"type": "chat", "payload": {"room_id": {room}, "content": "x", "user_id": "a\\u0007"}}',
        "invalid_message",
        "chat",
        ("payload.user_id",),
    ),
    (
        "user_id-too-long",
        '{"type": "chat", "payload": {"room_id": {room}, "content": "x", "user_id": "'
        + "u" * 65
        + '"}}',
        "invalid_message",
        "chat",
        ("payload.user_id",),
    ),
    (
        "join-room_id-string",
        '{"type": "join_room", "payload": {"room_id": "{room}"}}',
        "invalid_message",
        "join_room",
        ("payload.room_id",),
    ),
    (
        "join-room_id-missing",
        '{"type": "join_room", "payload": {}}',
        "invalid_message",
        "join_room",
        ("payload", "`room_id`"),
    ),
    (
        "leave-room_id-bool",
        '{"type": "leave_room", "payload": {"room_id": false}}',
        "invalid_message",
        "leave_room",
        ("payload.room_id",),
    ),
    (
        "typing-is_typing-string",
        '{"type": "typing", "payload": {"room_id": {room}, "is_typing": "yes"}}',
        "invalid_message",
        "typing",
        ("payload.is_typing",),
    ),
    (
        "typing-is_typing-missing",
        '{"type": "typing", "payload": {"room_id": {room}}}',
        "invalid_message",
        "typing",
        ("payload", "`is_typing`"),
    ),
    (
        "presence-status-unknown",
        '{"type": "presence", "payload": {"status": "gone"}}',
        "invalid_message",
        "presence",
        ("payload.status",),
    ),
    (
        "edit-message_id-string",
        '{"type": "message_edit", "payload": {"message_id": "1", "content": "x"}}',
        "invalid_message",
        "message_edit",
        ("payload.message_id",),
    ),
    (
        "edit-content-missing",
        '{"type": "message_edit", "payload": {"message_id": 1}}',
        "invalid_message",
        "message_edit",
        ("payload", "`content`"),
    ),
    (
        "delete-message_id-zero",
        '{"type": "message_delete", "payload": {"message_id": 0}}',
        "invalid_message",
        "message_delete",
        ("payload.message_id",),
    ),
    (
        "reaction-emoji-empty",
        '{"type": "message_reaction", "payload": {"message_id": 1, "emoji": ""}}',
        "invalid_message",
        "message_reaction",
        ("payload.emoji",),
    ),
    (
        "reaction-emoji-too-long",
        '{"type": "message_reaction", "payload": {"message_id": 1, "emoji": "' + "x" * 33 + '"}}',
        "invalid_message",
        "message_reaction",
        ("payload.emoji",),
    ),
    ("type-too-long", '{"type": "' + "t" * 65 + '"}', "invalid_message", None, ("message.type",)),
]


@pytest.mark.parametrize(
    ("frame", "code", "type", "names"),
    [pytest.param(frame, code, type, names, id=id) for id, frame, code, type, names in MALFORMED],
)
async def test_malformed_frame_gets_its_error_and_changes_nothing(
    server: ServerProcess,
    connect: Connect,
    room_id: int,
    user: UserName,
    frame: str,
    code: str,
    type: str | None,
    names: tuple[str, ...],
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    await alice.send_raw(frame.replace("{room}", str(room_id)))
    assert_error(await alice.expect_error(code), code, type, *names)
    await assert_nothing_changed(server, room_id, alice, [bob, alice])


async def test_unknown_type_names_the_type(
    server: ServerProcess, connect: Connect, room_id: int, user: UserName
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    await alice.send("shout", {"room_id": room_id, "content": "hello"})
    error = await alice.expect_error("unknown_type")
    assert_error(error, "unknown_type", "shout", "shout")
    await assert_nothing_changed(server, room_id, alice, [bob, alice])


async def test_binary_frame_is_refused_even_if_it_holds_valid_json(
    server: ServerProcess, connect: Connect, room_id: int, user: UserName
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    await alice.send_raw(chat(room_id, content="sent as binary").encode())
    assert_error(await alice.expect_error("invalid_message"), "invalid_message", None)
    await assert_nothing_changed(server, room_id, alice, [bob, alice])


# -- content --------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", " ", " \n\t\r "], ids=["empty", "space", "whitespace"])
async def test_empty_chat_content_is_invalid(
    server: ServerProcess, connect: Connect, room_id: int, user: UserName, content: str
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    await alice.send_raw(chat(room_id, content=content))
    error = await alice.expect_error("invalid_message")
    assert_error(error, "invalid_message", "chat", "payload.content")
    await assert_nothing_changed(server, room_id, alice, [bob, alice])


async def test_content_over_4000_characters_is_too_large_and_4000_is_accepted(
    server: ServerProcess, connect: Connect, room_id: int, user: UserName
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    await alice.send_raw(chat(room_id, content="x" * 4001))
    assert_error(await alice.expect_error("too_large"), "too_large", "chat", "payload.content")
    await alice.sync()
    # The limit counts characters, not bytes: 4000 two-byte characters fit.
    longest = "é" * 4000
    sent = await alice.chat(room_id, longest)
    assert sent["content"] == longest
    assert (await bob.recv("chat"))["payload"] == sent
    await assert_nothing_changed(server, room_id, alice, [bob, alice], stored=(longest,))


@pytest.mark.parametrize(
    ("content", "code"),
    [("   ", "invalid_message"), ("y" * 4001, "too_large")],
    ids=["blank", "too-long"],
)
async def test_bad_edit_content_leaves_the_message_unedited(
    server: ServerProcess,
    connect: Connect,
    room_id: int,
    user: UserName,
    content: str,
    code: str,
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    original = await alice.chat(room_id, "original")
    await bob.recv("chat")
    await alice.send("message_edit", {"message_id": original["id"], "content": content})
    assert_error(await alice.expect_error(code), code, "message_edit", "payload.content")
    await assert_nothing_changed(server, room_id, alice, [bob, alice], stored=("original",))
    assert (await history(server, room_id))[0]["edited_at"] is None


async def test_frame_over_64_kib_closes_the_connection_with_1009(
    server: ServerProcess, connect: Connect, room_id: int, user: UserName
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    await alice.send_raw(chat(room_id, content="z" * (65 * 1024)))
    await expect_close(alice, 1009)
    # The only thing Bob learns is that Alice is gone; nothing was stored.
    left = await bob.recv("user_left")
    assert left["payload"] == {"room_id": room_id, "user_id": user("alice")}
    offline = await bob.recv("presence")
    assert offline["payload"] == {"user_id": user("alice"), "status": "offline"}
    await assert_nothing_changed(server, room_id, bob, [bob])


def padded_ping(size: int) -> str:
    """A valid ping frame of exactly ``size`` bytes (unknown payload fields are ignored)."""
    frame = '{"type": "ping", "payload": {"pad": ""}}'
    text = frame.replace('""', '"' + "p" * (size - len(frame)) + '"')
    assert len(text.encode()) == size
    return text


async def test_frame_just_under_64_kib_is_accepted(connect: Connect, user: UserName) -> None:
    alice = await connect(user("alice"))
    await alice.send_raw(padded_ping(64 * 1024 - 1))
    await alice.recv("pong")


async def test_frame_of_exactly_64_kib_is_accepted(connect: Connect, user: UserName) -> None:
    alice = await connect(user("alice"))
    await alice.send_raw(padded_ping(64 * 1024))
    await alice.recv("pong")


# -- identity -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["user_id", "from_user_id"])
async def test_spoofed_sender_is_forbidden_and_nothing_is_relayed_or_stored(
    server: ServerProcess, connect: Connect, room_id: int, user: UserName, field: str
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    spoofed = user("bob")
    requests: list[tuple[str, dict[str, Any]]] = [
        ("chat", {"room_id": room_id, "content": "I am Bob"}),
        ("typing", {"room_id": room_id, "is_typing": True}),
        ("presence", {"status": "busy"}),
        ("join_room", {"room_id": room_id}),
        ("leave_room", {"room_id": room_id}),
        ("message_reaction", {"message_id": UNKNOWN_MESSAGE_ID, "emoji": "x"}),
    ]
    for type, payload in requests:
        await alice.send(type, {**payload, field: spoofed})
        error = await alice.expect_error("forbidden")
        assert_error(error, "forbidden", type, user("alice"), spoofed)
    await assert_nothing_changed(server, room_id, alice, [bob, alice])
    # Alice is still in the room (the spoofed leave did nothing) and still online.
    status, listed = await http_json("GET", f"{server.http}/api/rooms/{room_id}/users")
    assert status == 200
    assert without_activity(listed["users"]) == [
        {"user_id": user("alice"), "status": "online"},
        {"user_id": user("bob"), "status": "online"},
    ]


async def test_naming_your_own_user_id_is_allowed(
    server: ServerProcess, connect: Connect, room_id: int, user: UserName
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    await alice.send("chat", {"room_id": room_id, "content": "me", "user_id": user("alice")})
    sent = (await alice.recv("chat"))["payload"]
    assert sent["user_id"] == user("alice")
    assert (await bob.recv("chat"))["payload"] == sent


@pytest.mark.parametrize(
    ("type", "payload"),
    [
        ("join_room", {"room_id": 1}),
        ("chat", {"room_id": 1, "content": "hi"}),
        ("typing", {"room_id": 1, "is_typing": True}),
        ("leave_room", {}),
        ("presence", {"status": "away"}),
        ("message_edit", {"message_id": UNKNOWN_MESSAGE_ID, "content": "x"}),
        ("message_delete", {"message_id": UNKNOWN_MESSAGE_ID}),
        ("message_reaction", {"message_id": UNKNOWN_MESSAGE_ID, "emoji": "x"}),
    ],
    ids=[
        "join",
        "chat",
        "typing",
        "leave",
        "presence",
        "edit",
        "delete",
        "react",
    ],
)
async def test_request_before_a_user_is_known_is_unauthenticated(
    server: ServerProcess,
    connect: Connect,
    room_id: int,
    user: UserName,
    type: str,
    payload: dict[str, Any],
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    anonymous = await connect()
    assert anonymous.connected["user_id"] is None
    if "room_id" in payload:
        payload = {**payload, "room_id": room_id}
    await anonymous.send(type, payload)
    assert_error(await anonymous.expect_error("unauthenticated"), "unauthenticated", type)
    # The connection still answers pings (they need no user) and got nothing else.
    await assert_nothing_changed(server, room_id, anonymous, [bob, alice])
    status, listed = await http_json("GET", f"{server.http}/api/rooms/{room_id}/users")
    assert status == 200
    assert [entry["user_id"] for entry in listed["users"]] == [user("alice"), user("bob")]


async def test_naming_user_id_in_a_payload_identifies_the_connection(
    connect: Connect, room_id: int, user: UserName
) -> None:
    bob = await connect(user("bob"))
    await bob.join(room_id)
    late = await connect()
    await late.send("join_room", {"room_id": room_id})
    assert_error(await late.expect_error("unauthenticated"), "unauthenticated", "join_room")
    await late.send("join_room", {"room_id": room_id, "user_id": user("carol")})
    assert users((await late.recv("room_users"))["payload"]) == [user("bob"), user("carol")]
    joined = await bob.recv("user_joined")
    assert joined["payload"] == {"room_id": room_id, "user_id": user("carol")}
    # From now on the connection is Carol's: no need to name her, and no one else.
    sent = await late.chat(room_id, "carol here")
    assert sent["user_id"] == user("carol")
    assert (await bob.recv("chat"))["payload"] == sent
    await late.send("chat", {"room_id": room_id, "content": "x", "user_id": user("dave")})
    error = await late.expect_error("forbidden")
    assert_error(error, "forbidden", "chat", user("carol"), user("dave"))
    await late.sync()


# -- rooms and messages the sender has no business with -----------------------------------


async def test_non_member_chat_and_typing_are_forbidden(
    server: ServerProcess, connect: Connect, room_id: int, user: UserName
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    outsider = await connect(user("mallory"))
    await outsider.send("chat", {"room_id": room_id, "content": "let me in"})
    assert_error(await outsider.expect_error("forbidden"), "forbidden", "chat", str(room_id))
    await outsider.send("typing", {"room_id": room_id, "is_typing": True})
    assert_error(await outsider.expect_error("forbidden"), "forbidden", "typing", str(room_id))
    await assert_nothing_changed(server, room_id, outsider, [bob, alice])


async def test_member_of_another_room_cannot_chat_here(
    server: ServerProcess, connect: Connect, new_room: Callable[[], int], user: UserName
) -> None:
    here, elsewhere = new_room(), new_room()
    alice, bob = await member_pair(connect, here, user)
    other = await connect(user("olga"))
    await other.join(elsewhere)
    await other.send("chat", {"room_id": here, "content": "wrong room"})
    assert_error(await other.expect_error("forbidden"), "forbidden", "chat")
    await assert_nothing_changed(server, here, other, [bob, alice])
    assert await history(server, elsewhere) == []


async def test_leave_room_not_joined_is_not_found(
    server: ServerProcess, connect: Connect, new_room: Callable[[], int], user: UserName
) -> None:
    room_id, other_room = new_room(), new_room()
    alice, bob = await member_pair(connect, room_id, user)
    await alice.send("leave_room", {"room_id": other_room})
    error = await alice.expect_error("not_found")
    assert_error(error, "not_found", "leave_room", str(other_room))
    await assert_nothing_changed(server, room_id, alice, [bob, alice])


@pytest.mark.parametrize(
    ("type", "extra"),
    [
        ("message_edit", {"content": "new"}),
        ("message_delete", {}),
        ("message_reaction", {"emoji": "👍"}),
    ],
    ids=["edit", "delete", "react"],
)
async def test_operation_on_unknown_message_is_not_found(
    server: ServerProcess,
    connect: Connect,
    room_id: int,
    user: UserName,
    type: str,
    extra: dict[str, Any],
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    await alice.send(type, {"message_id": UNKNOWN_MESSAGE_ID, **extra})
    error = await alice.expect_error("not_found")
    assert_error(error, "not_found", type, str(UNKNOWN_MESSAGE_ID))
    await assert_nothing_changed(server, room_id, alice, [bob, alice])


@pytest.mark.parametrize(
    ("type", "extra"),
    [
        ("message_edit", {"content": "new"}),
        ("message_delete", {}),
        ("message_reaction", {"emoji": "👍"}),
    ],
    ids=["edit", "delete", "react"],
)
async def test_operation_on_a_message_in_a_room_not_joined_is_not_found(
    server: ServerProcess,
    connect: Connect,
    new_room: Callable[[], int],
    user: UserName,
    type: str,
    extra: dict[str, Any],
) -> None:
    """A message outside the sender's rooms is as good as unknown: it is not revealed."""
    room_id = new_room()
    alice, bob = await member_pair(connect, room_id, user)
    message = await alice.chat(room_id, "mine")
    await bob.recv("chat")
    outsider = await connect(user("mallory"))
    await outsider.join(new_room())
    await outsider.send(type, {"message_id": message["id"], **extra})
    error = await outsider.expect_error("not_found")
    assert_error(error, "not_found", type, str(message["id"]))
    await assert_nothing_changed(server, room_id, outsider, [bob, alice], stored=("mine",))
    stored = (await history(server, room_id))[0]
    assert (stored["edited_at"], stored["reactions"]) == (None, {})


async def test_deleted_message_is_not_found_afterwards(
    server: ServerProcess, connect: Connect, room_id: int, user: UserName
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    message = await alice.chat(room_id, "short-lived")
    await bob.recv("chat")
    await alice.send("message_delete", {"message_id": message["id"]})
    deleted = {"message_id": message["id"], "room_id": room_id, "by": user("alice")}
    assert (await alice.recv("message_delete"))["payload"] == deleted
    assert (await bob.recv("message_delete"))["payload"] == deleted
    for type, extra in [
        ("message_edit", {"content": "again"}),
        ("message_delete", {}),
        ("message_reaction", {"emoji": "x"}),
    ]:
        await alice.send(type, {"message_id": message["id"], **extra})
        assert_error(await alice.expect_error("not_found"), "not_found", type)
    await assert_nothing_changed(server, room_id, alice, [bob, alice])


async def test_spoofed_from_user_id_next_to_the_own_user_id_is_forbidden(
    server: ServerProcess, connect: Connect, room_id: int, user: UserName
) -> None:
    alice, bob = await member_pair(connect, room_id, user)
    await alice.send(
        "chat",
        {
            "room_id": room_id,
            "content": "I am Bob",
            "user_id": user("alice"),
            "from_user_id": user("bob"),
        },
    )
    error = await alice.expect_error("forbidden")
    assert_error(error, "forbidden", "chat", user("alice"), user("bob"))
    await assert_nothing_changed(server, room_id, alice, [bob, alice])
