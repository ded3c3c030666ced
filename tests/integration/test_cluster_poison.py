"""What a client sends can never make a cluster's log unreadable; what is unreadable resyncs.

A ``webrtc`` offer's ``data`` is relayed as raw JSON, so before the nesting
bound an offer nested about 985 levels passed the node's own decode but not
the decode of the log record carrying it (two levels deeper), on every node:
the record was skipped with everything else that node appended in the same
loop turn, and users who disconnected then stayed online everywhere.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import redis.asyncio as redis

from roomcast.features.rooms import Joined
from roomcast.ports.broker import (
    RECORD_FORMAT,
    LogEntry,
    Opened,
    Snapshot,
    SnapshotRequest,
    Unreadable,
    encode_batch,
)
from tests.harness.backends import REDIS_URL
from tests.harness.calls import offer_refused
from tests.harness.client import Client
from tests.harness.cluster import (
    ROOM,
    Cluster,
    drain,
    health,
    joined,
    presence,
    room_users,
)
from tests.harness.http import http_json
from tests.harness.server import ServerProcess
from tests.harness.timing import eventually_equal
from tests.integration.test_metrics import scrape
from tests.unit.test_log_records import CODEC

DEPTH_ERROR = {
    "code": "invalid_message",
    "message": "message: JSON nested deeper than 32 levels of arrays and objects",
}
UNREADABLE = ("roomcast_log_unreadable_entries_total", ())


def poison_offer(to_user: str, depth: int = 985) -> str:
    nesting = "[" * depth + "]" * depth
    payload = f'{{"type":"offer","to_user_id":"{to_user}","data":{nesting}}}'
    return f'{{"type":"webrtc","payload":{payload}}}'


async def frames_until_barrier(client: Client) -> list[dict[str, Any]]:
    """Every frame up to the answer of a ``join_room`` sent now (a round trip through the log)."""
    await client.send("join_room", {"room_id": ROOM})
    frames = []
    while (frame := await client.next(timeout=10))["type"] != "room_users":
        frames.append(frame)
    return frames


def about(frames: list[dict[str, Any]], user_id: str) -> list[tuple[str, Any]]:
    return [
        (frame["type"], frame["payload"])
        for frame in frames
        if frame["payload"].get("user_id") == user_id
        and frame["type"] in ("user_joined", "user_left", "presence")
    ]


def came_and_went(user_id: str) -> list[tuple[str, Any]]:
    return [
        ("user_joined", joined(user_id)),
        ("user_left", joined(user_id)),
        ("presence", presence(user_id, "offline")),
    ]


async def http_room(server: ServerProcess) -> Any:
    return await http_json("GET", f"{server.http}/api/rooms/{ROOM}/users")


async def test_a_deeply_nested_offer_is_refused_and_no_presence_change_is_lost(
    cluster: Cluster,
) -> None:
    a, b = await cluster.start(2)
    watcher = await cluster.connect(b, "watcher")
    callee = await cluster.connect(b, "callee")
    # One attacker on each node: each node's own appends share its log records.
    attackers = [await cluster.connect(a, "mallory-a"), await cluster.connect(b, "mallory-b")]
    for client in (watcher, callee, *attackers):
        await client.join(ROOM)
    await drain(watcher, callee, *attackers)

    users = [f"user{i}" for i in range(10)]
    for i, user_id in enumerate(users):
        node, attacker = (a, b)[i % 2], attackers[i % 2]
        client = await Client.connect(node.ws_url, user_id)
        await client.join(ROOM)
        # Offers just before and just after the close frame: the close is appended
        # in the same loop turn (the same record) as one of them, or the next.
        await attacker.send_raw(poison_offer("callee"))
        closing = asyncio.create_task(client.close())
        await asyncio.sleep(0)
        await attacker.send_raw(poison_offer("callee"))
        await closing

    # Every close took effect on both nodes (the users are gone from the room)...
    expected = room_users(ROOM, "callee", "mallory-a", "mallory-b", "watcher")
    for node in (a, b):
        await eventually_equal(lambda node=node: http_room(node), (200, expected), timeout=5)
    # ...so a round trip through the log now follows every frame they caused.
    for attacker in attackers:
        frames = await frames_until_barrier(attacker)
        errors = [frame["payload"] for frame in frames if frame["type"] == "error"]
        assert errors == [DEPTH_ERROR] * 10
        assert not [f for f in frames if f["type"] in ("call_ringing", "call_ended")], frames
    seen = await frames_until_barrier(watcher)
    for user_id in users:
        assert about(seen, user_id) == came_and_went(user_id)
    # Nobody who left still rings.
    await offer_refused(attackers[0], "user1", "unavailable")
    for node in (a, b):
        assert (await scrape(node)).get(UNREADABLE) == 0
        assert "unreadable" not in node.log()
        assert "RecursionError" not in node.log()


# -- an entry nobody can decode, written into the log by hand ---------------------------


#: A log entry that cannot be decoded: nested past what the decoder's stack allows.
UNDECODABLE = (
    b'{"kind":"request","conn":"x","data":' + b"[" * 5000 + b"]" * 5000 + b',"at":0,"wall":0}'
)


async def append_record(
    log: redis.Redis, cluster_name: str, origin: str, first: int, entries: list[bytes]
) -> None:
    """A log record as a node writes one (see RedisBroker._flush)."""
    fields = {
        "v": RECORD_FORMAT,
        "o": origin,
        "n": first,
        "c": len(entries),
        "e": encode_batch(entries),
    }
    await log.xadd(f"{cluster_name}:log", fields)  # type: ignore[arg-type]


async def entries_after(log: redis.Redis, cluster_name: str, start: bytes) -> list[LogEntry]:
    records: Any = await log.xrange(f"{cluster_name}:log", min=f"({start.decode()}")
    found: list[LogEntry] = []
    for _, fields in records:
        found += [e for e in CODEC.decode_batch(fields[b"e"]) if not isinstance(e, Unreadable)]
    return found


async def test_an_undecodable_entry_is_skipped_alone_and_the_nodes_resynchronise(
    cluster: Cluster,
) -> None:
    a, b = await cluster.start(2)
    watcher = await cluster.connect(b, "watcher")
    await watcher.join(ROOM)
    node_a = (await health(a.http))[1]["node"]
    node_b = (await health(b.http))[1]["node"]
    origin = "writer-" + uuid.uuid4().hex[:6]  # not a node: only its counters matter
    log = redis.from_url(REDIS_URL)
    try:
        # Two connections said to be node A's, which A does not hold: only a
        # snapshot of A can tell the other replicas they do not exist.
        await append_record(
            log,
            cluster.name,
            origin,
            1,
            [
                CODEC.encode(Opened("ghost1", node_a, "ghost1")),
                CODEC.encode(Joined("ghost1", ROOM)),
            ],
        )
        assert (await watcher.recv("user_joined"))["payload"] == joined("ghost1")
        newest: Any = await log.xrevrange(f"{cluster.name}:log", count=1)
        before_bad = bytes(newest[0][0])
        # The undecodable entry sits between two good ones of the same record.
        await append_record(
            log,
            cluster.name,
            origin,
            3,
            [
                CODEC.encode(Opened("ghost2", node_a, "ghost2")),
                UNDECODABLE,
                CODEC.encode(Joined("ghost2", ROOM)),
            ],
        )
        # Applied in order around it: ghost2 was opened, then joined.
        assert (await watcher.recv("user_joined"))["payload"] == joined("ghost2")
        # Then the resynchronisation: A's snapshot does not list the ghosts.
        frames = [await watcher.next(timeout=10) for _ in range(4)]
        assert [(f["type"], f["payload"]) for f in frames] == [
            ("user_left", joined("ghost1")),
            ("presence", presence("ghost1", "offline")),
            ("user_left", joined("ghost2")),
            ("presence", presence("ghost2", "offline")),
        ]
        await eventually_equal(lambda: http_room(b), (200, room_users(ROOM, "watcher")))
        # Both nodes counted the entry, logged it, and asked everyone for snapshots.
        for node in (a, b):
            await eventually_equal(lambda node=node: _unreadable(node), 1.0)
            assert f"unreadable log entry skipped origin={origin} counter=4" in node.log()
        after = await entries_after(log, cluster.name, before_bad)
        asked = {e.node for e in after if isinstance(e, SnapshotRequest)}
        answered = {e.node for e in after if isinstance(e, Snapshot)}
        assert {node_a, node_b} <= asked
        assert {node_a, node_b} <= answered
        assert await watcher.join(ROOM) == room_users(ROOM, "watcher")
    finally:
        await log.aclose()


async def _unreadable(node: ServerProcess) -> float | None:
    return (await scrape(node)).get(UNREADABLE)


async def test_records_of_another_format_or_a_false_count_are_refused_clearly(
    cluster: Cluster,
) -> None:
    """A node of an older version (format 1: a bare JSON array in ``b``) is named in
    one clear log line; a record that claims more entries than any node writes
    cannot move its writer's counter past entries still to come."""
    a, b = await cluster.start(2)
    watcher = await cluster.connect(b, "watcher")
    await watcher.join(ROOM)
    node_a = (await health(a.http))[1]["node"]
    log = redis.from_url(REDIS_URL)
    try:
        legacy = b"[" + CODEC.encode(Opened("old1", node_a, "old1")) + b"]"
        for _ in range(2):
            await log.xadd(f"{cluster.name}:log", {"o": "old-node", "n": 1, "b": legacy})
        origin = "writer-" + uuid.uuid4().hex[:6]
        fields = {"v": RECORD_FORMAT, "o": origin, "n": 1, "c": 10**9, "e": b"[]\n[]"}
        await log.xadd(f"{cluster.name}:log", fields)  # type: ignore[arg-type]
        # Each connection is opened and joined in one record: the resynchronisation the
        # bad records start brings node A's snapshot, which drops connections it does
        # not hold, and it must not land between the two.
        for n, user in ((1, "next1"), (3, "next2")):
            opened = CODEC.encode(Opened(user, node_a, user))
            await append_record(
                log, cluster.name, origin, n, [opened, CODEC.encode(Joined(user, ROOM))]
            )
        for user in ("next1", "next2"):
            assert (await watcher.recv_until("user_joined", timeout=10))["payload"] == joined(user)
        for node in (a, b):
            await eventually_equal(lambda node=node: _unreadable(node), 3.0)
            said = node.log().count("node old-node writes log records in format 1")
            assert said == 1, node.log()[-3000:]
    finally:
        await log.aclose()
