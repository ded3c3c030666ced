"""Chat across nodes: edits, deletes, reactions, and one order per room under concurrency."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

from tests.harness.calls import uid
from tests.harness.client import Client
from tests.harness.cluster import (
    OTHER_ROOM,
    ROOM,
    Cluster,
    barrier,
    drain,
    joined,
    room_users,
    send_chat,
)
from tests.harness.database import stored_ids
from tests.harness.http import history, http_json, stored

# -- 1. chat ---------------------------------------------------------------------------


async def test_a_room_created_on_one_node_is_announced_on_the_others(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    alice = await cluster.connect(a, "alice")
    bob = await cluster.connect(b, "bob")
    carol = await cluster.connect(b, "carol")
    url = f"{b.http}/api/rooms?user_id={uid(alice)}"
    status, room = await http_json(
        "POST", url, {"name": "new", "private": True, "members": [uid(bob)]}
    )
    assert status == 201, room
    for member in (alice, bob):  # the creator's connection is on the other node
        assert (await member.recv("room_created"))["payload"] == {"room": room}
    await barrier(carol, room["id"] + 1)  # not a member: told nothing


async def test_chat_edits_deletes_and_reactions_cross_nodes(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    alice = await cluster.connect(a, "alice")
    bob = await cluster.connect(b, "bob")
    carol = await cluster.connect(b, "carol")
    dave = await cluster.connect(a, "dave")  # in another room: hears nothing of this one
    erin = await cluster.connect(b, "erin")

    assert await alice.join(ROOM) == room_users(ROOM, "alice")
    assert await bob.join(ROOM) == room_users(ROOM, "alice", "bob")
    assert (await alice.recv("user_joined"))["payload"] == joined("bob")
    assert await carol.join(ROOM) == room_users(ROOM, "alice", "bob", "carol")
    for member in (alice, bob):
        assert (await member.recv("user_joined"))["payload"] == joined("carol")
    assert await dave.join(OTHER_ROOM) == room_users(OTHER_ROOM, "dave")
    assert await erin.join(OTHER_ROOM) == room_users(OTHER_ROOM, "dave", "erin")
    assert (await dave.recv("user_joined"))["payload"] == joined("erin", OTHER_ROOM)

    # Messages from either node reach every member on both, in one order.
    members = (alice, bob, carol)
    sent: list[dict[str, Any]] = []
    for sender, content in [(alice, "one"), (bob, "two"), (carol, "three"), (alice, "four")]:
        await send_chat(sender, content)
        message = (await sender.recv("chat"))["payload"]
        assert {k: v for k, v in message.items() if k not in ("id", "created_at")} == {
            "room_id": ROOM,
            "user_id": uid(sender),
            "content": content,
            "type": "text",
            "thread_id": None,
            "mentions": [],
        }
        for member in members:
            if member is not sender:
                assert (await member.recv("chat"))["payload"] == message
        sent.append(message)
    ids = [m["id"] for m in sent]
    assert ids == sorted(set(ids)), ids

    one, two, _three, _four = sent
    # An edit on node A reaches node B.
    await alice.send("message_edit", {"message_id": one["id"], "content": "one!"})
    edit = (await alice.recv("message_edit"))["payload"]
    assert {k: v for k, v in edit.items() if k != "edited_at"} == {
        "message_id": one["id"],
        "room_id": ROOM,
        "content": "one!",
        "thread_id": None,
        "mentions": [],
    }
    for member in (bob, carol):
        assert (await member.recv("message_edit"))["payload"] == edit
    # A reaction on node B reaches node A; the same again removes it.
    for action in ("added", "removed", "added"):
        await bob.send("message_reaction", {"message_id": one["id"], "emoji": "👍"})
        reaction = {
            "message_id": one["id"],
            "room_id": ROOM,
            "user_id": "bob",
            "emoji": "👍",
            "action": action,
        }
        for member in members:
            assert (await member.recv("message_reaction"))["payload"] == reaction
    # A delete on node B reaches node A.
    await bob.send("message_delete", {"message_id": two["id"]})
    for member in members:
        assert (await member.recv("message_delete"))["payload"] == {
            "message_id": two["id"],
            "room_id": ROOM,
            "by": uid(bob),
        }
    # Another node's author cannot edit: the store decides, wherever the request lands.
    await carol.send("message_edit", {"message_id": one["id"], "content": "mine now"})
    await carol.expect_error("forbidden", "message_edit")

    for client in (*members, dave, erin):
        await barrier(client, ROOM if client in members else OTHER_ROOM)
    expected = [
        stored(one, content="one!", edited_at=edit["edited_at"], reactions={"👍": ["bob"]}),
        *(stored(m) for m in sent[2:]),
    ]
    assert await history(a, ROOM) == expected
    assert await history(b, ROOM) == expected
    assert await history(a, OTHER_ROOM) == []


# -- 4. ordering under concurrency ---------------------------------------------------------


async def test_concurrent_senders_on_three_nodes_every_client_sees_one_order(
    cluster: Cluster,
) -> None:
    nodes = await cluster.start(3)
    senders_count, per_sender = 3, 200
    senders = [await cluster.connect(nodes[i], f"s{i}") for i in range(senders_count)]
    watchers = [await cluster.connect(node, f"w{i}") for i, node in enumerate(nodes)]
    clients = [*senders, *watchers]
    for client in clients:
        await client.join(ROOM)
    await drain(*clients)
    total = senders_count * per_sender

    async def send_all(index: int) -> None:
        for n in range(per_sender):
            await send_chat(senders[index], f"{index}:{n}")
            if n % 5 == 0:
                await asyncio.sleep(0)

    async def receive_all(client: Client) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while len(messages) < total:
            frame = await client.next(timeout=15)
            assert frame["type"] == "chat", frame
            messages.append(frame["payload"])
        return messages

    receivers = [asyncio.create_task(receive_all(client)) for client in clients]
    await asyncio.gather(*(send_all(i) for i in range(senders_count)))
    seen = await asyncio.wait_for(asyncio.gather(*receivers), 60)

    reference = seen[0]
    ids = [m["id"] for m in reference]
    assert all(x < y for x, y in itertools.pairwise(ids)), "ids not strictly increasing"
    assert Counter((m["user_id"], m["content"]) for m in reference) == Counter(
        (f"s{i}", f"{i}:{n}") for i in range(senders_count) for n in range(per_sender)
    )
    for i in range(senders_count):  # each sender's messages keep its sending order
        own = [m["content"] for m in reference if m["user_id"] == f"s{i}"]
        assert own == [f"{i}:{n}" for n in range(per_sender)]
    for client, client_seen in zip(clients, seen, strict=True):
        assert [m["id"] for m in client_seen] == ids, uid(client)
        assert client_seen == reference, uid(client)
    for client in clients:
        await barrier(client)  # nothing beyond the expected messages
    assert sorted(stored_ids(nodes[0])) == ids
    expected = [stored(m) for m in reference]
    for node in nodes:
        assert await history(node, ROOM) == expected


async def test_a_member_removed_on_one_node_is_cut_off_on_the_others(cluster: Cluster) -> None:
    """The removal is applied everywhere before the remover's next message: the
    HTTP call returns once the log has it, and the log has one order."""
    a, b = await cluster.start(2)
    alice = await cluster.connect(a, "alice")
    bob = await cluster.connect(b, "bob")
    status, room = await http_json(
        "POST",
        f"{a.http}/api/rooms?user_id={uid(alice)}",
        {"name": "crew", "private": True, "members": [uid(bob)]},
    )
    assert status == 201, room
    await alice.recv("room_created")
    await bob.recv("room_created")
    await alice.join(room["id"])
    await bob.join(room["id"])
    await alice.recv("user_joined")
    path = f"/api/rooms/{room['id']}/members/{uid(bob)}?user_id={uid(alice)}"
    assert (await http_json("DELETE", a.http + path))[0] == 204
    await alice.send("chat", {"room_id": room["id"], "content": "after bob", "type": "text"})
    assert (await bob.recv("member_removed"))["payload"]["reason"] == "removed"
    await barrier(bob, room["id"] + 1)  # nothing of the room follows
    assert (await alice.recv_until("chat"))["payload"]["content"] == "after bob"


# -- 3. conversations ------------------------------------------------------------------


async def test_mentions_receipts_and_counts_cross_nodes(cluster: Cluster) -> None:
    """Bob's phone is on one node, his laptop (in no room) on the other: a
    mention reaches both, reading on the phone clears the laptop's badge, and
    the reader's receipt reaches the room on both nodes."""
    a, b = await cluster.start(2)
    alice, phone = await cluster.connect(a, "alice"), await cluster.connect(a, "bob")
    laptop, carol = await cluster.connect(b, "bob"), await cluster.connect(b, "carol")
    status, room = await http_json(
        "POST",
        f"{a.http}/api/rooms?user_id=alice",
        {"name": "t", "private": True, "members": ["bob", "carol"]},
    )
    assert status == 201, room
    room_id = room["id"]
    for client in (alice, phone, carol):
        await client.recv("room_created")
        await client.join(room_id)
    await send_chat(alice, "root", room_id=room_id)
    root = (await alice.recv_until("chat"))["payload"]
    await alice.send(
        "chat",
        {"room_id": room_id, "content": "@bob", "thread_id": root["id"], "mentions": ["bob"]},
    )
    reply = (await alice.recv_until("chat"))["payload"]
    assert (reply["thread_id"], reply["mentions"]) == (root["id"], ["bob"])
    assert (await carol.recv_until("thread_updated"))["payload"]["reply_count"] == 1
    notes = [(await c.recv_until("notification"))["payload"] for c in (phone, laptop)]
    assert notes[0] == notes[1] and notes[0]["message_id"] == reply["id"]
    laptop.skip_unread = False
    state = (await laptop.recv_until("unread"))["payload"]["rooms"]
    while state[0]["mentions"] != 1:
        state = (await laptop.recv_until("unread"))["payload"]["rooms"]
    # Reading the thread on the phone (node a) reads it on the laptop (node b).
    await phone.send(
        "read", {"room_id": room_id, "message_id": reply["id"], "thread_id": root["id"]}
    )
    assert (await laptop.recv_until("notification_read"))["payload"] == {"ids": [notes[0]["id"]]}
    state = (await laptop.recv_until("unread"))["payload"]["rooms"]
    while state[0]["mentions"] != 0:
        state = (await laptop.recv_until("unread"))["payload"]["rooms"]
    for client in (alice, carol):
        receipt = (await client.recv_until("read_receipt"))["payload"]
        assert receipt == {
            "room_id": room_id,
            "user_id": "bob",
            "message_id": reply["id"],
            "thread_id": root["id"],
        }
    # A new connection on either node is told the same counts, from the store.
    for node in (a, b):
        fresh = await cluster.connect(node, "bob")
        assert [(r["room_id"], r["mentions"]) for r in fresh.unread["rooms"]] == [(room_id, 0)]


# -- 4. search -------------------------------------------------------------------------


async def test_search_on_one_node_finds_what_another_stored(cluster: Cluster) -> None:
    """A message sent on node a is found through node b as soon as b delivers
    it; an edit on b is found by its new text through a; a member removed on a
    finds nothing through b."""
    a, b = await cluster.start(2)
    alice, bob = await cluster.connect(a, "alice"), await cluster.connect(b, "bob")
    status, room = await http_json(
        "POST",
        f"{a.http}/api/rooms?user_id=alice",
        {"name": "s", "private": True, "members": ["bob"]},
    )
    assert status == 201, room
    room_id = room["id"]
    for client in (alice, bob):
        await client.recv("room_created")
        await client.join(room_id)

    async def found(node_http: str, user: str, q: str) -> list[str]:
        status, page = await http_json("GET", f"{node_http}/api/search?user_id={user}&q={q}")
        assert status == 200, page
        return [hit["message"]["content"] for hit in page["results"]]

    await send_chat(alice, "鈴虫 PLT-3699 cluster", room_id=room_id)
    sent = (await bob.recv_until("chat"))["payload"]
    assert await found(b.http, "bob", "3699") == ["鈴虫 PLT-3699 cluster"]
    assert await found(b.http, "bob", "鈴虫") == ["鈴虫 PLT-3699 cluster"]
    await bob.send("message_edit", {"message_id": sent["id"], "content": "reworded"})
    await bob.recv_until("error")  # not bob's message: refused
    await alice.send("message_edit", {"message_id": sent["id"], "content": "reworded 3699"})
    await bob.recv_until("message_edit")
    assert await found(a.http, "alice", "reworded") == ["reworded 3699"]
    assert await found(b.http, "bob", "cluster") == []
    path = f"/api/rooms/{room_id}/members/bob?user_id=alice"
    assert (await http_json("DELETE", a.http + path))[0] == 204
    assert await found(b.http, "bob", "3699") == []
    assert await found(a.http, "alice", "3699") == ["reworded 3699"]
