"""Joining and leaving rooms: room_users, user_joined, user_left, several connections per user.

``Client.sync()`` (a ping answered by the very next frame) proves that a client
has nothing else queued: every frame caused by a request that has already been
answered is written before the pong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.harness.client import Connect
from tests.harness.http import all_rooms, http_json
from tests.harness.server import ServerProcess


def online(*user_ids: str) -> list[dict[str, str]]:
    return [{"user_id": user_id, "status": "online"} for user_id in sorted(user_ids)]


async def http_room_users(server: ServerProcess, room_id: int) -> tuple[int, Any]:
    return await http_json("GET", f"{server.http}/api/rooms/{room_id}/users")


async def test_join_sends_room_users_to_joiner_and_user_joined_to_others(
    connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice = await connect(user("alice"))
    bob = await connect(user("bob"))
    assert await alice.join(room_id) == {"room_id": room_id, "users": online(user("alice"))}
    await alice.sync()
    assert await bob.join(room_id) == {
        "room_id": room_id,
        "users": online(user("alice"), user("bob")),
    }
    joined = await alice.recv("user_joined")
    assert joined["payload"] == {"room_id": room_id, "user_id": user("bob")}
    await alice.sync()
    await bob.sync()  # the joiner is not told about itself


async def test_join_is_scoped_to_the_room(
    connect: Connect, new_room: Callable[[], int], user: Callable[[str], str]
) -> None:
    room_a, room_b = new_room(), new_room()
    alice = await connect(user("alice"))
    bob = await connect(user("bob"))
    await alice.join(room_a)
    assert await bob.join(room_b) == {"room_id": room_b, "users": online(user("bob"))}
    await alice.sync()


async def test_leave_room_tells_the_remaining_members(
    server: ServerProcess, connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice = await connect(user("alice"))
    bob = await connect(user("bob"))
    await alice.join(room_id)
    await bob.join(room_id)
    await alice.recv("user_joined")
    await bob.send("leave_room", {"room_id": room_id})
    left = await alice.recv("user_left")
    assert left["payload"] == {"room_id": room_id, "user_id": user("bob")}
    await bob.sync()
    await alice.sync()
    assert await http_room_users(server, room_id) == (
        200,
        {"room_id": room_id, "users": online(user("alice"))},
    )
    # No longer a member: bob cannot talk in the room.
    await bob.send("chat", {"room_id": room_id, "content": "still here?", "type": "text"})
    await bob.expect_error("forbidden", "chat")


async def test_leave_room_without_room_id_leaves_every_room(
    server: ServerProcess,
    connect: Connect,
    new_room: Callable[[], int],
    user: Callable[[str], str],
) -> None:
    rooms = [new_room(), new_room()]
    alice = await connect(user("alice"))
    bob = await connect(user("bob"))
    for room in rooms:
        await alice.join(room)
        await bob.join(room)
        await alice.recv("user_joined")
    await bob.send("leave_room", {})
    payloads = [(await alice.recv("user_left"))["payload"] for _ in rooms]
    assert sorted(payloads, key=lambda p: p["room_id"]) == [
        {"room_id": room, "user_id": user("bob")} for room in rooms
    ]
    await alice.sync()
    for room in rooms:
        assert await http_room_users(server, room) == (
            200,
            {"room_id": room, "users": online(user("alice"))},
        )


async def test_user_with_two_connections_joins_once_and_leaves_once(
    server: ServerProcess, connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice = await connect(user("alice"))
    bob_1 = await connect(user("bob"))
    bob_2 = await connect(user("bob"))
    await alice.join(room_id)

    await bob_1.join(room_id)
    assert (await alice.recv("user_joined"))["payload"] == {
        "room_id": room_id,
        "user_id": user("bob"),
    }
    # The second connection of the same user: listed once, announced to nobody.
    assert await bob_2.join(room_id) == {
        "room_id": room_id,
        "users": online(user("alice"), user("bob")),
    }
    await alice.sync()
    await bob_1.sync()

    # The first connection leaving is not the user leaving.
    await bob_1.send("leave_room", {"room_id": room_id})
    await bob_1.sync()
    await alice.sync()
    await bob_2.sync()
    assert await http_room_users(server, room_id) == (
        200,
        {"room_id": room_id, "users": online(user("alice"), user("bob"))},
    )

    # The last one is.
    await bob_2.send("leave_room", {"room_id": room_id})
    assert (await alice.recv("user_left"))["payload"] == {
        "room_id": room_id,
        "user_id": user("bob"),
    }
    await alice.sync()
    await bob_1.sync()
    await bob_2.sync()
    assert await http_room_users(server, room_id) == (
        200,
        {"room_id": room_id, "users": online(user("alice"))},
    )


async def test_rejoin_after_leaving_announces_again(
    connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice = await connect(user("alice"))
    bob = await connect(user("bob"))
    await alice.join(room_id)
    await bob.join(room_id)
    await alice.recv("user_joined")
    await bob.send("leave_room", {"room_id": room_id})
    await alice.recv("user_left")
    await bob.join(room_id)
    assert (await alice.recv("user_joined"))["payload"] == {
        "room_id": room_id,
        "user_id": user("bob"),
    }


async def test_open_mode_join_of_unknown_room_creates_a_public_room(
    server: ServerProcess, connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    status, body = await http_room_users(server, room_id)
    assert status == 404, body
    assert body["error"]["code"] == "not_found"
    alice = await connect(user("alice"))
    await alice.join(room_id)
    [room] = [room for room in await all_rooms(server) if room["id"] == room_id]
    assert room["private"] is False
    assert room["created_by"] == user("alice")
    # Public: anyone may join it, and history is readable.
    bob = await connect(user("bob"))
    assert await bob.join(room_id) == {
        "room_id": room_id,
        "users": online(user("alice"), user("bob")),
    }
    status, body = await http_json("GET", f"{server.http}/api/rooms/{room_id}/messages")
    assert (status, body) == (200, {"messages": [], "next_before": None, "next_after": None})


async def test_a_created_room_is_announced_to_those_who_may_see_it(
    server: ServerProcess, connect: Connect, user: Callable[[str], str]
) -> None:
    """``room_created`` keeps room lists live: a public room goes to every
    connected user (its creator's other tabs too), a private one to its members."""
    alice, bob, carol = [await connect(user(name)) for name in ("alice", "bob", "carol")]
    url = f"{server.http}/api/rooms?user_id={user('alice')}"
    status, public = await http_json("POST", url, {"name": "announced", "private": False})
    assert status == 201, public
    for client in (alice, bob, carol):
        assert (await client.recv("room_created"))["payload"] == {"room": public}
    body = {"name": "secret plans", "private": True, "members": [user("bob")]}
    status, private = await http_json("POST", url, body)
    assert status == 201, private
    assert sorted(private["members"]) == sorted([user("alice"), user("bob")])
    for client in (alice, bob):
        assert (await client.recv("room_created"))["payload"] == {"room": private}
    await carol.sync()  # told nothing: it is not a member
