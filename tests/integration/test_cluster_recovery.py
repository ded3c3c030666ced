"""A cluster through failures: a node killed, Redis restarted, PostgreSQL out of reach."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.backends import POSTGRES_URL
from tests.harness.calls import answer, offer_refused, ring, uid
from tests.harness.client import Client
from tests.harness.cluster import (
    NODE_TTL,
    OTHER_ROOM,
    ROOM,
    Cluster,
    barrier,
    db_ids,
    drain,
    frames_within,
    health,
    http_users,
    joined,
    presence,
    room_users,
    send_chat,
    typing,
    wait_health,
)
from tests.harness.database import stored_ids
from tests.harness.http import history, stored
from tests.harness.server import free_port

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
