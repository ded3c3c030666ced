"""Typing indicators and presence against the shared server (typing timeout 0.5 s)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.client import Client, Connect
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

TYPING_TIMEOUT = 0.5  # the shared server's --typing-timeout


def typing(room_id: int, user_id: str, is_typing: bool) -> dict[str, Any]:
    return {"room_id": room_id, "user_id": user_id, "is_typing": is_typing}


async def members(connect: Connect, room_id: int, *user_ids: str) -> list[Client]:
    """One connection per user id, all in the room, with the join announcements consumed."""
    clients = [await connect(user_id) for user_id in user_ids]
    for client in clients:
        await client.join(room_id)
    for client in clients:
        await client.send("ping")
        await client.recv_until("pong")
    return clients


async def send_typing(client: Client, room_id: int, is_typing: bool) -> None:
    await client.send("typing", {"room_id": room_id, "is_typing": is_typing})


async def test_typing_goes_to_other_members_not_to_the_typists_connections(
    connect: Connect, new_room: Callable[[], int], user: Callable[[str], str]
) -> None:
    room_id, other_room = new_room(), new_room()
    alice_1, alice_2, bob = await members(
        connect, room_id, user("alice"), user("alice"), user("bob")
    )
    [carol] = await members(connect, other_room, user("carol"))
    await send_typing(alice_1, room_id, True)
    assert (await bob.recv("typing"))["payload"] == typing(room_id, user("alice"), True)
    await send_typing(alice_1, room_id, False)
    await alice_1.sync()
    # Sent at once, not left to the timeout: it is queued before the answer to a ping.
    await bob.send("ping")
    assert (await bob.recv("typing"))["payload"] == typing(room_id, user("alice"), False)
    await bob.recv("pong")
    for client in (alice_1, alice_2, bob, carol):
        await client.sync()


async def test_repeated_typing_true_is_sent_once_and_extends_the_timeout(
    connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice, bob = await members(connect, room_id, user("alice"), user("bob"))
    await send_typing(alice, room_id, True)
    assert (await bob.recv("typing"))["payload"] == typing(room_id, user("alice"), True)
    await asyncio.sleep(TYPING_TIMEOUT * 0.6)
    await send_typing(alice, room_id, True)
    await alice.sync()
    renewed = time.monotonic()
    # Not re-sent, and no longer due at the first deadline (0.2 s from now).
    await bob.expect_silence(TYPING_TIMEOUT * 0.7)
    assert (await bob.recv("typing", timeout=3))["payload"] == typing(room_id, user("alice"), False)
    assert time.monotonic() - renewed < TYPING_TIMEOUT + 1.5
    await alice.sync()  # the typist is not told


async def test_typing_ends_by_itself_after_the_timeout(
    connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice, bob = await members(connect, room_id, user("alice"), user("bob"))
    started = time.monotonic()
    await send_typing(alice, room_id, True)
    assert (await bob.recv("typing"))["payload"] == typing(room_id, user("alice"), True)
    assert (await bob.recv("typing", timeout=3))["payload"] == typing(room_id, user("alice"), False)
    elapsed = time.monotonic() - started
    assert TYPING_TIMEOUT * 0.8 <= elapsed < TYPING_TIMEOUT + 1.5, elapsed
    await alice.sync()
    # Typing again after the timeout is announced again.
    await send_typing(alice, room_id, True)
    assert (await bob.recv("typing"))["payload"] == typing(room_id, user("alice"), True)


async def test_sending_a_chat_message_ends_typing(
    connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice, bob = await members(connect, room_id, user("alice"), user("bob"))
    await send_typing(alice, room_id, True)
    assert (await bob.recv("typing"))["payload"] == typing(room_id, user("alice"), True)
    await alice.send("chat", {"room_id": room_id, "content": "done typing", "type": "text"})
    message = (await alice.recv("chat"))["payload"]
    frames = await bob.recv_many(2)
    assert [(f["type"], f["payload"]) for f in frames] == [
        ("typing", typing(room_id, user("alice"), False)),
        ("chat", message),
    ]
    # Typing ended: nothing more when the timeout would have passed.
    await bob.expect_silence(TYPING_TIMEOUT + 0.1)
    await alice.sync()


async def test_disconnect_ends_typing_then_leaves_and_goes_offline(
    connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice, bob = await members(connect, room_id, user("alice"), user("bob"))
    await send_typing(alice, room_id, True)
    assert (await bob.recv("typing"))["payload"] == typing(room_id, user("alice"), True)
    await alice.close()
    frames = await bob.recv_many(3)
    assert [(f["type"], f["payload"]) for f in frames] == [
        ("typing", typing(room_id, user("alice"), False)),
        ("user_left", {"room_id": room_id, "user_id": user("alice")}),
        ("presence", {"user_id": user("alice"), "status": "offline"}),
    ]
    await bob.sync()


async def test_typing_in_a_room_one_is_not_in_is_forbidden(
    connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    [bob] = await members(connect, room_id, user("bob"))
    mallory = await connect(user("mallory"))
    await send_typing(mallory, room_id, True)
    await mallory.expect_error("forbidden", "typing")
    await bob.sync()


async def test_presence_goes_to_users_sharing_a_room(
    server: ServerProcess, connect: Connect, new_room: Callable[[], int], user: Callable[[str], str]
) -> None:
    room_id, other_room = new_room(), new_room()
    alice, bob = await members(connect, room_id, user("alice"), user("bob"))
    [carol] = await members(connect, other_room, user("carol"))
    for status in ("away", "busy", "offline", "online"):
        await alice.send("presence", {"status": status})
        expected = {"user_id": user("alice"), "status": status}
        assert (await bob.recv("presence"))["payload"] == expected
        assert (await alice.recv("presence"))["payload"] == expected  # own connections too
        await carol.sync()  # shares no room with alice
        await bob.sync()
        status_code, body = await http_json("GET", f"{server.http}/api/rooms/{room_id}/users")
        assert (status_code, body) == (
            200,
            {
                "room_id": room_id,
                "users": [
                    {"user_id": user("alice"), "status": status},
                    {"user_id": user("bob"), "status": "online"},
                ],
            },
        )


@pytest.mark.parametrize("status", ["away", "busy", "offline"])
async def test_room_users_shows_the_chosen_status(
    connect: Connect, room_id: int, user: Callable[[str], str], status: str
) -> None:
    alice = await connect(user(f"alice-{status}"))
    await alice.send("presence", {"status": status})
    assert (await alice.recv("presence"))["payload"] == {
        "user_id": user(f"alice-{status}"),
        "status": status,
    }
    await alice.join(room_id)
    bob = await connect(user(f"bob-{status}"))
    assert await bob.join(room_id) == {
        "room_id": room_id,
        "users": [
            {"user_id": user(f"alice-{status}"), "status": status},
            {"user_id": user(f"bob-{status}"), "status": "online"},
        ],
    }


async def test_only_the_last_connection_closing_makes_a_user_leave(
    server: ServerProcess, connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice_1, alice_2, bob = await members(
        connect, room_id, user("alice"), user("alice"), user("bob")
    )
    await alice_1.close()
    await alice_2.sync()
    await bob.sync()
    status, body = await http_json("GET", f"{server.http}/api/rooms/{room_id}/users")
    assert status == 200
    assert body["users"] == [
        {"user_id": user("alice"), "status": "online"},
        {"user_id": user("bob"), "status": "online"},
    ]
    await alice_2.close()
    frames = await bob.recv_many(2)
    assert [(f["type"], f["payload"]) for f in frames] == [
        ("user_left", {"room_id": room_id, "user_id": user("alice")}),
        ("presence", {"user_id": user("alice"), "status": "offline"}),
    ]
    await bob.sync()


async def test_user_sharing_two_rooms_is_told_once(
    connect: Connect, new_room: Callable[[], int], user: Callable[[str], str]
) -> None:
    rooms = [new_room(), new_room()]
    alice = await connect(user("alice"))
    bob = await connect(user("bob"))
    for room in rooms:
        await alice.join(room)
        await bob.join(room)
        await alice.recv("user_joined")
    await alice.send("presence", {"status": "busy"})
    assert (await bob.recv("presence"))["payload"] == {"user_id": user("alice"), "status": "busy"}
    await bob.sync()
    await alice.close()
    frames = await bob.recv_many(3)
    assert [(f["type"], f["payload"]) for f in frames] == [
        ("user_left", {"room_id": rooms[0], "user_id": user("alice")}),
        ("user_left", {"room_id": rooms[1], "user_id": user("alice")}),
        ("presence", {"user_id": user("alice"), "status": "offline"}),
    ]
    await bob.sync()
