"""Several roomcast processes as one cluster: real Redis, real PostgreSQL, real sockets.

Every test gets a cluster of its own (a PostgreSQL schema and a Redis key
prefix named ``t_<uuid>``) and starts two or three ``roomcast serve`` nodes in
it, with clients spread over the nodes.

Frames caused on one node reach another node's clients through the Redis log,
so a plain ``sync()`` (a ping round trip to the client's own node) proves
nothing about them. :func:`barrier` is the cross-node equivalent: a
``join_room`` of a room the connection is already in goes through the log and
comes back as ``room_users``, so when it returns, the client's node has
applied every log entry appended before it, and whatever those entries sent
to the client arrived before that ``room_users``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness.backends import POSTGRES_URL, cluster_args, drop_cluster_state
from tests.harness.calls import OFFER, answer, ring, uid
from tests.harness.calls import signal as signal_to
from tests.harness.client import Client
from tests.harness.database import stored_ids
from tests.harness.http import history, http_json, stored
from tests.harness.server import ServerProcess, free_port

NODE_TTL = 1.5
TYPING_TIMEOUT = 0.5
BASE_ARGS = (
    "--typing-timeout", str(TYPING_TIMEOUT),
    "--rate-limits", "off",
    "--node-ttl", str(NODE_TTL),
)  # fmt: skip
ROOM = 1
OTHER_ROOM = 2


def candidate(port: int) -> dict[str, Any]:
    return {
        "candidate": f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }


# -- the cluster under test --------------------------------------------------------------


class Cluster:
    """Nodes of one cluster and the clients connected to them; all stopped at the end."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.nodes: list[ServerProcess] = []
        self.clients: list[Client] = []

    async def start(self, count: int, *extra: str) -> list[ServerProcess]:
        """Start ``count`` nodes at once (``extra`` flags win over the defaults)."""
        first = len(self.nodes)
        nodes = [
            ServerProcess(
                self.directory / f"node{first + i}.db", *BASE_ARGS, *extra, cluster=self.name
            )
            for i in range(count)
        ]
        self.nodes.extend(nodes)
        # In threads: start() blocks, and a test may serve something on this loop.
        await asyncio.gather(*(asyncio.to_thread(node.start) for node in nodes))
        # Let the nodes' snapshot exchange (a node that starts asks everyone) pass.
        await asyncio.sleep(0.3)
        return nodes

    async def connect(self, node: ServerProcess, user_id: str) -> Client:
        client = await Client.connect(node.ws_url, user_id)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2)
        for node in self.nodes:
            if node.proc is not None:
                node.stop()

    def dump_logs(self) -> None:
        """Printed at teardown: pytest shows it only when the test failed."""
        for node in self.nodes:
            print(f"----- node :{node.port} ({node.log_path.name}) -----")
            print(node.log()[-20000:])


def cluster_name() -> str:
    return "t_" + uuid.uuid4().hex[:12]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    name = cluster_name()
    drop_cluster_state(name)
    state = Cluster(name, tmp_path)
    try:
        yield state
    finally:
        await state.close()
        state.dump_logs()
        drop_cluster_state(name)


# -- helpers ---------------------------------------------------------------------------


def online(*user_ids: str, **statuses: str) -> list[dict[str, str]]:
    return [{"user_id": u, "status": statuses.get(u, "online")} for u in sorted(user_ids)]


def room_users(room_id: int, *user_ids: str, **statuses: str) -> dict[str, Any]:
    return {"room_id": room_id, "users": online(*user_ids, **statuses)}


def joined(user_id: str, room_id: int = ROOM) -> dict[str, Any]:
    return {"room_id": room_id, "user_id": user_id}


def typing(user_id: str, is_typing: bool, room_id: int = ROOM) -> dict[str, Any]:
    return {"room_id": room_id, "user_id": user_id, "is_typing": is_typing}


def presence(user_id: str, status: str) -> dict[str, str]:
    return {"user_id": user_id, "status": status}


async def barrier(client: Client, room_id: int = ROOM, expect_users: Any = None) -> None:
    """A round trip through the log from ``client``'s node; nothing may arrive before it."""
    payload = await client.join(room_id)
    assert payload["room_id"] == room_id
    if expect_users is not None:
        assert payload == expect_users


async def drain(*clients: Client, room_id: int = ROOM) -> None:
    """Drop what each client was sent up to a round trip through the log."""
    for client in clients:
        await client.send("join_room", {"room_id": room_id})
        await client.recv_until("room_users", timeout=5)


async def send_chat(client: Client, content: str, room_id: int = ROOM) -> None:
    await client.send("chat", {"room_id": room_id, "content": content, "type": "text"})


def db_ids(name: str, room_id: int = ROOM) -> list[int]:
    """The room's message ids in the cluster's database, read without any node."""
    result = subprocess.run(
        [
            "psql", POSTGRES_URL, "-At", "-c",
            f"SELECT id FROM {name}.messages WHERE room_id = {room_id} ORDER BY id",
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return [int(line) for line in result.stdout.split()]


async def http_users(server: ServerProcess, room_id: int = ROOM) -> tuple[int, Any]:
    return await http_json("GET", f"{server.http}/api/rooms/{room_id}/users")


async def health(url: str) -> tuple[int, Any]:
    # A new connection each time (with --workers the kernel picks a process per connection).
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        return response.status, await response.json()


async def wait_health(url: str, broker: str, timeout: float = 8.0) -> dict[str, Any]:
    """Poll /health until it reports ``broker``; returns that body."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await health(url)
        if body.get("broker") == broker:
            return dict(body)
        assert time.monotonic() < deadline, (status, body)
        await asyncio.sleep(0.05)


async def frames_within(client: Client, count: int, deadline: float) -> list[dict[str, Any]]:
    """The next ``count`` frames, all of which must arrive before ``deadline`` (monotonic)."""
    frames: list[dict[str, Any]] = []
    for _ in range(count):
        frames.append(await client.next(timeout=max(0.01, deadline - time.monotonic())))
    return frames


# -- 1. chat ---------------------------------------------------------------------------


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


# -- 2. rooms, presence, typing ------------------------------------------------------------


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


# -- 3. calls ------------------------------------------------------------------------------


async def offer_refused(caller: Client, callee_id: str, reason: str) -> str:
    await caller.send("webrtc", {"type": "offer", "to_user_id": callee_id, "data": OFFER})
    ended = (await caller.recv("call_ended"))["payload"]
    assert ended == {"call_id": ended["call_id"], "reason": reason}
    return str(ended["call_id"])


async def list_calls(server: ServerProcess, user_id: str) -> list[dict[str, Any]]:
    status, body = await http_json("GET", f"{server.http}/api/calls?user_id={user_id}")
    assert status == 200, body
    calls: list[dict[str, Any]] = body["calls"]
    return calls


async def test_calls_ring_answer_signal_and_end_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    alice = await cluster.connect(a, "alice")
    bob_a = await cluster.connect(a, "bob")
    bob_b = await cluster.connect(b, "bob")
    carol = await cluster.connect(b, "carol")
    everyone = (alice, bob_a, bob_b, carol)
    for client in everyone:
        await client.join(ROOM)
    await drain(*everyone)

    # alice (node A) calls bob, who has a connection on each node: both ring.
    call_id = await ring(alice, bob_a, bob_b)
    # ICE from the caller while ringing goes to every ringing connection, on both nodes.
    expected = await signal_to(alice, "ice_candidate", call_id, "bob", candidate(50001))
    for conn in (bob_a, bob_b):
        assert (await conn.recv("webrtc"))["payload"] == expected
    # bob answers on node B: the caller (node A) gets it, bob's tab on node A stops ringing.
    await answer(bob_b, alice, call_id)
    assert (await bob_a.recv("call_ended"))["payload"] == {
        "call_id": call_id,
        "reason": "answered_elsewhere",
    }
    # Signaling flows between the two call connections, across the nodes.
    expected = await signal_to(alice, "ice_candidate", call_id, "bob", candidate(50002))
    assert (await bob_b.recv("webrtc"))["payload"] == expected
    expected = await signal_to(bob_b, "ice_candidate", call_id, "alice", candidate(50003))
    assert (await alice.recv("webrtc"))["payload"] == expected
    # The tab that did not answer is out of the call, on its own node too.
    await signal_to(bob_a, "ice_candidate", call_id, "alice", candidate(50004))
    await bob_a.expect_error("forbidden", "webrtc")

    # Busy everywhere: carol (node B) calls bob, then alice (both in the call).
    busy_bob = await offer_refused(carol, "bob", "busy")
    busy_alice = await offer_refused(carol, "alice", "busy")
    for client in everyone:
        await barrier(client)

    # alice hangs up on node A: bob's answering connection on node B is told.
    await alice.send("call_end", {"call_id": call_id})
    assert (await bob_b.recv("call_ended"))["payload"] == {
        "call_id": call_id,
        "reason": "ended",
        "by": "alice",
    }
    for client in everyone:
        await barrier(client)

    # Glare across nodes: carol (node B) rings alice (node A); alice calls carol back.
    carol_call = await ring(carol, alice)
    glare = await offer_refused(alice, "carol", "glare")
    assert glare != carol_call
    await barrier(carol)
    # The earlier call still rings: carol cancels it, and alice is told.
    await carol.send("call_end", {"call_id": carol_call})
    assert (await alice.recv("call_ended"))["payload"] == {
        "call_id": carol_call,
        "reason": "ended",
        "by": "carol",
    }
    for client in everyone:
        await barrier(client)

    # The caller (node B) disconnects while bob's two connections ring.
    dropped_call = await ring(carol, bob_a, bob_b)
    await carol.close()
    for conn in (bob_a, bob_b):
        frames = await conn.recv_many(3, timeout=5)
        assert [(f["type"], f["payload"]) for f in frames] == [
            ("call_ended", {"call_id": dropped_call, "reason": "disconnected"}),
            ("user_left", joined("carol")),
            ("presence", presence("carol", "offline")),
        ]
    await drain(alice)

    # Every node lists each call once, as it ended.
    expected_alice = {call_id, busy_alice, carol_call, glare}
    deadline = time.monotonic() + 5
    while True:
        lists = [await list_calls(node, "alice") for node in (a, b)]
        if all(
            {c["call_id"] for c in calls} == expected_alice and all(c["ended_at"] for c in calls)
            for calls in lists
        ):
            break
        assert time.monotonic() < deadline, lists
        await asyncio.sleep(0.05)
    assert lists[0] == lists[1]
    assert len(lists[0]) == len(expected_alice), lists[0]  # no call twice
    by_id = {c["call_id"]: c for c in lists[0]}
    assert by_id[call_id]["caller"] == "alice" and by_id[call_id]["callee"] == "bob"
    assert by_id[call_id]["end_reason"] == "ended"
    assert by_id[call_id]["answered_at"] is not None
    assert (by_id[busy_alice]["caller"], by_id[busy_alice]["end_reason"]) == ("carol", "busy")
    assert (by_id[carol_call]["caller"], by_id[carol_call]["end_reason"]) == ("carol", "ended")
    assert by_id[carol_call]["answered_at"] is None
    assert (by_id[glare]["caller"], by_id[glare]["end_reason"]) == ("alice", "glare")

    expected_bob = {call_id, busy_bob, dropped_call}
    deadline = time.monotonic() + 5
    while True:
        lists = [await list_calls(node, "bob") for node in (a, b)]
        if all(
            len(calls) == len(expected_bob)
            and {c["call_id"] for c in calls} == expected_bob
            and all(c["ended_at"] for c in calls)
            for calls in lists
        ):
            break
        assert time.monotonic() < deadline, lists
        await asyncio.sleep(0.05)
    assert lists[0] == lists[1]
    assert {c["call_id"]: c["end_reason"] for c in lists[0]}[dropped_call] == "disconnected"


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


# -- 5. a node dies ----------------------------------------------------------------------


async def test_a_killed_node_is_declared_gone_and_its_users_leave_everywhere(
    cluster: Cluster,
) -> None:
    # Typing would end by itself within its timeout: make it outlive the node detection.
    a, b = await cluster.start(2, "--typing-timeout", "60")
    bob = await cluster.connect(a, "bob")
    carol = await cluster.connect(a, "carol")
    dave_a = await cluster.connect(a, "dave")
    alice = await cluster.connect(b, "alice")  # only on node B
    dave_b = await cluster.connect(b, "dave")  # on both nodes
    survivors = (bob, carol, dave_a)
    for client in (*survivors, alice, dave_b):
        await client.join(ROOM)
    await drain(*survivors, alice, dave_b)
    assert await alice.join(OTHER_ROOM) == room_users(OTHER_ROOM, "alice")
    assert await carol.join(OTHER_ROOM) == room_users(OTHER_ROOM, "alice", "carol")
    assert (await alice.recv("user_joined"))["payload"] == joined("carol", OTHER_ROOM)

    # alice types in both rooms and is in a call with bob (node A).
    for room_id in (ROOM, OTHER_ROOM):
        await alice.send("typing", {"room_id": room_id, "is_typing": True})
    for client in (*survivors, dave_b):
        assert (await client.recv("typing"))["payload"] == typing("alice", True)
    assert (await carol.recv("typing"))["payload"] == typing("alice", True, OTHER_ROOM)
    call_id = await ring(alice, bob)
    await answer(bob, alice, call_id)
    for client in survivors:
        await barrier(client)

    killed = time.monotonic()
    assert b.proc is not None
    b.proc.kill()
    b.proc.wait()
    deadline = killed + 2 * NODE_TTL + 3

    left = [
        ("typing", typing("alice", False)),
        ("user_left", joined("alice")),
    ]
    bob_frames = await frames_within(bob, 4, deadline)
    assert [(f["type"], f["payload"]) for f in bob_frames] == [
        ("call_ended", {"call_id": call_id, "reason": "disconnected"}),
        *left,
        ("presence", presence("alice", "offline")),
    ]
    carol_frames = await frames_within(carol, 5, deadline)
    assert sorted((f["type"], str(f["payload"])) for f in carol_frames) == sorted(
        (kind, str(payload))
        for kind, payload in [
            *left,
            ("typing", typing("alice", False, OTHER_ROOM)),
            ("user_left", joined("alice", OTHER_ROOM)),
            ("presence", presence("alice", "offline")),
        ]
    )
    assert carol_frames[-1]["type"] == "presence"  # offline after leaving every room
    dave_frames = await frames_within(dave_a, 3, deadline)
    assert [(f["type"], f["payload"]) for f in dave_frames] == [
        *left,
        ("presence", presence("alice", "offline")),
    ]
    elapsed = time.monotonic() - killed
    assert elapsed < 2 * NODE_TTL + 3, elapsed
    # dave is still in the room through node A: no user_left, no offline for him.
    for client in survivors:
        await barrier(client, expect_users=room_users(ROOM, "bob", "carol", "dave"))
    assert await http_users(a) == (200, room_users(ROOM, "bob", "carol", "dave"))
    assert await http_users(a, OTHER_ROOM) == (200, room_users(OTHER_ROOM, "carol"))
    # The call is over: bob may be called again, and alice is unavailable.
    await offer_refused(bob, "alice", "unavailable")
    # The surviving node goes on.
    message = await bob.chat(ROOM, "still here")
    for client in (carol, dave_a):
        assert (await client.recv("chat"))["payload"] == message
    status, body = await health(a.http)
    assert (status, body["status"], body["broker"]) == (200, "ok", "connected")


# -- 6. Redis restarts while messages flow ----------------------------------------------


class RedisServer:
    """A private redis-server on its own port, without persistence."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
            ],
            stdout=log, stderr=log,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            result = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            )
            if result.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_restart_while_messages_flow_loses_and_repeats_nothing(
    private_redis: RedisServer, cluster: Cluster
) -> None:
    a, b = await cluster.start(2, "--broker", private_redis.url)
    sender_a = await cluster.connect(a, "sender-a")
    sender_b = await cluster.connect(b, "sender-b")
    watcher_a = await cluster.connect(a, "watcher-a")
    watcher_b = await cluster.connect(b, "watcher-b")
    clients = (sender_a, sender_b, watcher_a, watcher_b)
    for client in clients:
        await client.join(ROOM)
    await drain(*clients)

    received: dict[str, list[dict[str, Any]]] = {uid(c): [] for c in clients}
    unexpected: dict[str, list[dict[str, Any]]] = {uid(c): [] for c in clients}

    async def collect(client: Client) -> None:
        while True:
            frame = await client.next(timeout=60)
            if frame["type"] == "chat":
                received[uid(client)].append(frame["payload"])
            else:
                unexpected[uid(client)].append(frame)

    stop = asyncio.Event()
    sent: Counter[str] = Counter()
    sent_at: dict[str, float] = {}  # content -> when it was sent (monotonic)

    async def send_loop(client: Client) -> None:
        while not stop.is_set():
            content = f"{uid(client)}:{sent[uid(client)]}"
            sent_at[content] = time.monotonic()
            await send_chat(client, content)
            sent[uid(client)] += 1
            await asyncio.sleep(0.02)

    def late_on(watcher: str, sender: str, older_than: float) -> tuple[int, list[str]]:
        """How many of ``sender``'s messages sent ``older_than`` seconds ago or earlier
        ``watcher`` has not received."""
        cutoff = time.monotonic() - older_than
        due = [c for c, at in sent_at.items() if c.startswith(f"{sender}:") and at <= cutoff]
        got = {m["content"] for m in received[watcher]}
        return len(due), [c for c in due if c not in got]

    collectors = [asyncio.create_task(collect(c)) for c in clients]
    senders = [asyncio.create_task(send_loop(c)) for c in (sender_a, sender_b)]
    try:
        await asyncio.sleep(0.5)
        private_redis.stop()
        body = await wait_health(a.http, "degraded", timeout=5)
        assert body["status"] == "degraded" and body["database"] == "ok", body
        status, body = await health(a.http)
        assert status == 200, body
        await wait_health(b.http, "degraded", timeout=5)
        # Local users are still served: a message sent on node A during the outage
        # reaches node A's clients within a second (gap waits and fills included).
        # (Checked at the end, so that the recovery below is checked whatever happens here.)
        await asyncio.sleep(2.0)
        late = {}
        for watcher, sender in [("watcher-a", "sender-a"), ("watcher-b", "sender-b")]:
            due, missing = late_on(watcher, sender, older_than=1.0)
            if missing:
                late[watcher] = f"{len(missing)} of {due} {sender} messages late: {missing[:5]}…"
        during_b = sum(m["user_id"] == "sender-b" for m in received["watcher-b"])
        await asyncio.to_thread(private_redis.start)
        for node in (a, b):
            await wait_health(node.http, "connected", timeout=8)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*senders)
        assert sum(m["user_id"] == "sender-b" for m in received["watcher-b"]) > during_b

        # Every client ends up with exactly the stored sequence.
        deadline = time.monotonic() + 10
        while True:
            expected_ids = db_ids(cluster.name)
            got = {name: [m["id"] for m in messages] for name, messages in received.items()}
            if all(ids == expected_ids for ids in got.values()):
                break
            if time.monotonic() > deadline:
                report = {
                    name: {
                        "count": len(ids),
                        "missing": sorted(set(expected_ids) - set(ids))[:20],
                        "duplicates": [i for i, n in Counter(ids).items() if n > 1][:20],
                        "out_of_order": sum(x >= y for x, y in itertools.pairwise(ids)),
                    }
                    for name, ids in got.items()
                }
                raise AssertionError(f"{len(expected_ids)} stored; received: {report}")
            await asyncio.sleep(0.1)
        assert len(expected_ids) == sum(sent.values())
    finally:
        stop.set()
        for task in [*collectors, *senders]:
            task.cancel()
        await asyncio.gather(*collectors, *senders, return_exceptions=True)
    for client in clients:
        await barrier(client)  # nothing more comes
    assert unexpected == {uid(c): [] for c in clients}
    reference = received["watcher-a"]
    assert all(messages == reference for messages in received.values())
    assert await history(b, ROOM) == [stored(m) for m in reference]
    assert late == {}, "local delivery stalled while Redis was away"


async def test_a_message_a_cut_off_node_stored_reaches_a_node_that_recovered_first(
    private_redis: RedisServer, cluster: Cluster
) -> None:
    """Node B is slow to notice that Redis is back and stores a message while it
    still thinks it is cut off (so it is applied on B alone). Node A came back
    first and has already read what it missed from the database; it must still
    get B's message, when B asks for snapshots, with no later message to reveal
    the gap."""
    [a] = await cluster.start(1, "--broker", private_redis.url, "--node-ttl", "1")
    [b] = await cluster.start(1, "--broker", private_redis.url, "--node-ttl", "9")
    watcher = await cluster.connect(a, "watcher")
    sender = await cluster.connect(b, "sender")
    await watcher.join(ROOM)
    await sender.join(ROOM)
    await drain(watcher, sender)

    private_redis.stop()
    await sender.chat(ROOM, "while redis is down")  # B's append fails: B is cut off
    await wait_health(b.http, "degraded", timeout=5)
    await wait_health(a.http, "degraded", timeout=5)
    await asyncio.to_thread(private_redis.start)
    await wait_health(a.http, "connected", timeout=5)  # A looks three times a second
    await sender.chat(ROOM, "B still cut off")  # B looks every three seconds
    _, body = await health(b.http)
    assert body["broker"] == "degraded", "B noticed Redis was back too soon for this test"

    received = [(await watcher.recv_until("chat", timeout=15))["payload"] for _ in range(2)]
    assert [m["content"] for m in received] == ["while redis is down", "B still cut off"]
    assert [m["id"] for m in received] == db_ids(cluster.name)


# -- 7. PostgreSQL goes away ----------------------------------------------------------------


class TcpProxy:
    """A TCP proxy on this test's event loop that can be cut and restored."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, up_writer}
        self._writers |= pair

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, RuntimeError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= pair


async def test_postgres_unreachable_fails_the_sender_only_and_recovers(
    cluster: Cluster,
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.open()
    try:
        url = POSTGRES_URL.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        assert url != POSTGRES_URL
        [node] = await cluster.start(
            1, "--db-timeout", "1", "--database", f"{url}?search_path={cluster.name}"
        )
        alice = await cluster.connect(node, "alice")
        bob = await cluster.connect(node, "bob")
        await alice.join(ROOM)
        await bob.join(ROOM)
        assert (await alice.recv("user_joined"))["payload"] == joined("bob")
        before = await alice.chat(ROOM, "before the outage")
        assert (await bob.recv("chat"))["payload"] == before

        proxy.cut()
        await send_chat(alice, "during the outage")
        error = (await alice.recv("error", timeout=10))["payload"]
        assert (error["code"], error.get("type")) == ("internal", "chat"), error
        await bob.sync()  # bob was sent nothing
        await alice.sync()
        status, body = await health(node.http)
        assert status == 503, body
        assert (body["status"], body["database"]) == ("unavailable", "unreachable"), body

        await proxy.open()
        deadline = time.monotonic() + 10
        while (await health(node.http))[0] != 200:
            assert time.monotonic() < deadline, await health(node.http)
            await asyncio.sleep(0.1)
        after = await alice.chat(ROOM, "after the outage")
        assert (await bob.recv("chat"))["payload"] == after
        assert after["id"] > before["id"]
        assert await history(node, ROOM) == [stored(before), stored(after)]
        assert stored_ids(node) == {before["id"], after["id"]}
        await bob.sync()
    finally:
        proxy.cut()


# -- 8. --workers ----------------------------------------------------------------------


class WorkersProcess:
    """``roomcast serve --workers N``: one parent, N nodes sharing one port."""

    def __init__(self, directory: Path, name: str, count: int) -> None:
        self.port = free_port()
        self.log_path = directory / f"workers.{self.port}.log"
        self.command = [
            sys.executable, "-m", "roomcast", "serve",
            "--workers", str(count),
            "--port", str(self.port),
            *cluster_args(name),
            *BASE_ARGS,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.command, stdout=log, stderr=log, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.http}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"did not become healthy:\n{self.log()}")

    def stop(self) -> None:
        """Make sure the parent and its workers are gone (their own process group)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def connections_per_worker(url: str, attempts: int = 60) -> dict[str, int]:
    """Each worker's open WebSocket connections, asking both over one HTTP connection."""
    counts: dict[str, int] = {}
    for _ in range(attempts):
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(f"{url}/health") as response:
                first = (await response.json())["node"]
            async with session.get(f"{url}/metrics") as response:
                text = await response.text()
            async with session.get(f"{url}/health") as response:
                second = (await response.json())["node"]
        if first != second:
            continue  # not one connection after all: cannot tell whose metrics these are
        [line] = [line for line in text.splitlines() if line.startswith("roomcast_connections ")]
        counts[first] = int(float(line.split()[1]))
        if len(counts) == 2:
            break
    return counts


async def expect_close_after_departures(client: Client, code: int, timeout: float = 10) -> None:
    """The server closes ``client`` with ``code``; before that only other users leaving
    (whose connections on the other worker closed first) may arrive."""
    deadline = time.monotonic() + timeout
    while True:
        message = await asyncio.wait_for(
            client.ws.receive(), max(0.01, deadline - time.monotonic())
        )
        if message.type is not aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(message.data)
        assert frame["type"] in ("user_left", "presence"), frame
        if frame["type"] == "presence":
            assert frame["payload"]["status"] == "offline", frame
    closing = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
    assert message.type in closing, f"expected a close, got {message.type!r} {message.data!r}"
    received = message.data if message.type is aiohttp.WSMsgType.CLOSE else client.ws.close_code
    assert received == code, (received, message)


@pytest.fixture
def workers_cluster(tmp_path: Path) -> Iterator[WorkersProcess]:
    name = cluster_name()
    drop_cluster_state(name)
    process = WorkersProcess(tmp_path, name, 2)
    try:
        yield process
    finally:
        process.stop()
        print(f"----- workers :{process.port} -----")
        print(process.log()[-20000:])
        drop_cluster_state(name)


async def test_workers_share_one_port_and_chat_between_them(
    workers_cluster: WorkersProcess,
) -> None:
    server = workers_cluster
    await asyncio.to_thread(server.start)
    # The kernel spreads new connections over both processes: two nodes answer.
    nodes: set[str] = set()
    deadline = time.monotonic() + 15
    while len(nodes) < 2:
        assert time.monotonic() < deadline, nodes
        status, body = await health(server.http)
        if status == 200:
            assert body["status"] == "ok" and body["broker"] == "connected", body
            nodes.add(body["node"])
    await asyncio.sleep(0.3)  # the second worker's snapshot exchange

    clients: list[Client] = []
    try:
        # Connect until both workers hold connections (almost always after a few).
        while True:
            for _ in range(4):
                clients.append(await Client.connect(f"{server.http}/ws", f"u{len(clients)}"))
            counts = await connections_per_worker(server.http)
            if len(counts) == 2 and all(counts.values()):
                break
            assert len(clients) < 24, counts
        assert set(counts) == nodes
        assert sum(counts.values()) == len(clients), counts

        for client in clients:
            await client.join(ROOM)
        await drain(*clients)
        for client in clients:
            await send_chat(client, f"from {uid(client)}")
        seen: list[list[dict[str, Any]]] = []
        for client in clients:
            seen.append([(await client.recv("chat", timeout=5))["payload"] for _ in clients])
        reference = seen[0]
        ids = [m["id"] for m in reference]
        assert all(x < y for x, y in itertools.pairwise(ids)), ids
        assert sorted(m["content"] for m in reference) == sorted(f"from {uid(c)}" for c in clients)
        assert all(client_seen == reference for client_seen in seen)
        for client in clients:
            await barrier(client)

        # SIGTERM to the parent: every worker drains its connections, the parent exits 0.
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        for client in clients:
            await expect_close_after_departures(client, 1001)
        code = await asyncio.to_thread(server.proc.wait, 15)
        assert code == 0, server.log()
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2)


async def test_a_new_node_is_not_ready_until_the_live_nodes_told_it_what_they_hold(
    cluster: Cluster,
) -> None:
    """A node that starts asks every live node for a snapshot; until it has them (or
    node_ttl passed) /health says "starting" with 503, so no traffic reaches a replica
    that would think a callee on another node is unavailable."""
    [a] = await cluster.start(1)
    alice = await cluster.connect(a, "alice")
    await alice.join(ROOM)
    a.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]  # alive, but silent
    try:
        b = ServerProcess(cluster.directory / "late.db", *BASE_ARGS, cluster=cluster.name)
        cluster.nodes.append(b)
        starting = asyncio.create_task(asyncio.to_thread(b.start))
        seen: set[str] = set()
        while not starting.done():
            with contextlib.suppress(OSError, aiohttp.ClientError, ValueError):
                status, body = await health(b.http)
                seen.add(f"{status} {body.get('status')}")
            await asyncio.sleep(0.05)
        await starting
        assert "503 starting" in seen, seen
    finally:
        a.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    # Woken up, node A answers B's snapshot request: B learns that alice is there.
    deadline = time.monotonic() + 5
    while (await http_users(b))[1] != room_users(ROOM, "alice"):
        assert time.monotonic() < deadline, await http_users(b)
        await asyncio.sleep(0.05)


async def test_a_node_started_during_a_call_learns_it_from_the_snapshots(
    cluster: Cluster,
) -> None:
    """A call placed before a node existed is in that node's replica (from the caller's
    node's snapshot): callers there see the parties busy, and the call still ends
    normally for everyone."""
    [a] = await cluster.start(1)
    alice = await cluster.connect(a, "alice")
    bob = await cluster.connect(a, "bob")
    for client in (alice, bob):
        await client.join(ROOM)
    await drain(alice, bob)
    call_id = await ring(alice, bob)
    await answer(bob, alice, call_id)

    [b] = await cluster.start(1)
    carol = await cluster.connect(b, "carol")
    await carol.join(ROOM)
    await offer_refused(carol, "alice", "busy")
    await offer_refused(carol, "bob", "busy")
    await alice.send("call_end", {"call_id": call_id})
    assert (await bob.recv_until("call_ended"))["payload"] == {
        "call_id": call_id,
        "reason": "ended",
        "by": "alice",
    }
    # The call is over on node B too: carol can now ring bob.
    await carol.send("webrtc", {"type": "offer", "to_user_id": "bob", "data": OFFER})
    assert (await carol.recv_until("call_ringing"))["payload"]["to_user_id"] == "bob"
