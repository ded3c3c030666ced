"""Rooms, presence and typing across nodes: users join and leave once, everywhere."""

from __future__ import annotations

import time

from tests.harness.cluster import (
    ROOM,
    TYPING_TIMEOUT,
    Cluster,
    barrier,
    drain,
    http_users,
    joined,
    presence,
    room_users,
    send_chat,
    typing,
)


async def test_users_on_two_nodes_join_and_leave_once_and_see_presence_and_typing(
    cluster: Cluster,
) -> None:
    a, b = await cluster.start(2)
    bob = await cluster.connect(b, "bob")
    alice_a = await cluster.connect(a, "alice")
    alice_b = await cluster.connect(b, "alice")
    carol = await cluster.connect(a, "carol")

    assert await bob.join(ROOM) == room_users(ROOM, "bob")
    assert await alice_a.join(ROOM) == room_users(ROOM, "alice", "bob")
    assert (await bob.recv("user_joined"))["payload"] == joined("alice")
    # alice's second connection, on the other node: she is not announced again.
    assert await alice_b.join(ROOM) == room_users(ROOM, "alice", "bob")
    await barrier(bob, expect_users=room_users(ROOM, "alice", "bob"))
    await barrier(alice_a)
    assert await carol.join(ROOM) == room_users(ROOM, "alice", "bob", "carol")
    for member in (bob, alice_a, alice_b):
        assert (await member.recv("user_joined"))["payload"] == joined("carol")
    everyone = (bob, alice_a, alice_b, carol)
    for client in everyone:
        await barrier(client, expect_users=room_users(ROOM, "alice", "bob", "carol"))
    for node in (a, b):
        assert await http_users(node) == (200, room_users(ROOM, "alice", "bob", "carol"))

    # Presence set on node B: users on node A (and alice's tab on A) see it.
    for status in ("away", "busy", "online"):
        await alice_b.send("presence", {"status": status})
        for client in everyone:
            assert (await client.recv("presence"))["payload"] == presence("alice", status)
        if status != "online":
            for node in (a, b):
                assert await http_users(node) == (
                    200,
                    room_users(ROOM, "alice", "bob", "carol", alice=status),
                )
    # A status set on node A shows in room_users on node B.
    await carol.send("presence", {"status": "away"})
    for client in everyone:
        assert (await client.recv("presence"))["payload"] == presence("carol", "away")
    await barrier(bob, expect_users=room_users(ROOM, "alice", "bob", "carol", carol="away"))
    await carol.send("presence", {"status": "online"})
    for client in everyone:
        assert (await client.recv("presence"))["payload"] == presence("carol", "online")

    # Typing on node A reaches node B and both of alice's tabs, never carol herself.
    await carol.send("typing", {"room_id": ROOM, "is_typing": True})
    for client in (bob, alice_a, alice_b):
        assert (await client.recv("typing"))["payload"] == typing("carol", True)
    await carol.send("typing", {"room_id": ROOM, "is_typing": False})
    for client in (bob, alice_a, alice_b):
        assert (await client.recv("typing"))["payload"] == typing("carol", False)
    # Typing on node B ends by itself after the timeout, on both nodes.
    started = time.monotonic()
    await bob.send("typing", {"room_id": ROOM, "is_typing": True})
    for client in (alice_a, alice_b, carol):
        assert (await client.recv("typing"))["payload"] == typing("bob", True)
    for client in (alice_a, alice_b, carol):
        assert (await client.recv("typing", timeout=3))["payload"] == typing("bob", False)
    elapsed = time.monotonic() - started
    assert TYPING_TIMEOUT * 0.8 <= elapsed < TYPING_TIMEOUT + 1.5, elapsed
    # Typing then a message: the indicator ends before the message, on the other node too.
    await bob.send("typing", {"room_id": ROOM, "is_typing": True})
    assert (await carol.recv("typing"))["payload"] == typing("bob", True)
    await send_chat(bob, "typed")
    message = (await bob.recv("chat"))["payload"]
    frames = await carol.recv_many(2)
    assert [(f["type"], f["payload"]) for f in frames] == [
        ("typing", typing("bob", False)),
        ("chat", message),
    ]
    await drain(alice_a, alice_b)
    for client in everyone:
        await barrier(client)

    # alice leaves from node A: she still has node B's connection in the room.
    await alice_a.send("leave_room", {"room_id": ROOM})
    await alice_a.sync()  # the leave has been applied on node A
    for client in (bob, carol, alice_b):
        await barrier(client, expect_users=room_users(ROOM, "alice", "bob", "carol"))
    for node in (a, b):
        assert await http_users(node) == (200, room_users(ROOM, "alice", "bob", "carol"))
    # Her last connection in the room (on node B) leaves: one user_left on each node.
    await alice_b.send("leave_room", {"room_id": ROOM})
    for client in (bob, carol):
        assert (await client.recv("user_left"))["payload"] == joined("alice")
    for client in (bob, carol):
        await barrier(client, expect_users=room_users(ROOM, "bob", "carol"))
    await alice_a.sync()
    await alice_b.sync()

    # bob's only connection (node B) closes: carol on node A sees him leave and go offline.
    await bob.close()
    frames = await carol.recv_many(2, timeout=5)
    assert [(f["type"], f["payload"]) for f in frames] == [
        ("user_left", joined("bob")),
        ("presence", presence("bob", "offline")),
    ]
    await barrier(carol, expect_users=room_users(ROOM, "carol"))
    for node in (a, b):
        assert await http_users(node) == (200, room_users(ROOM, "carol"))
