"""Two nodes' replicas over one in-process log: the same entries, the same state.

No sockets and no Redis: each node gets a member of one log that applies
every entry to every replica in one order, as the Redis stream does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from roomcast.adapters.sqlite_store import SQLiteStore
from roomcast.clock import wall_ms
from roomcast.config import Settings
from roomcast.features import default_features
from roomcast.features.calls import Calls
from roomcast.features.membership import MembershipChanged
from roomcast.features.ping import Ping
from roomcast.features.rooms import Joined, Left, Rooms
from roomcast.node.connections import LocalConnection
from roomcast.node.feature import NodeParts
from roomcast.node.node import Node
from roomcast.ports.broker import BrokerState, LogEntry, Replica
from roomcast.ports.store import StoreUnavailable
from roomcast.protocol import CreateRoom
from roomcast.transport.fanout import FanOut

ROOM = 5


class InProcessLog:
    """One total order of entries for several replicas (what the Redis stream gives)."""

    def __init__(self) -> None:
        self.replicas: list[Replica] = []
        self._queue: list[tuple[LogEntry, str]] = []
        self._draining = False
        self.entries: list[LogEntry] = []

    def member(self, node_id: str) -> LogMember:
        return LogMember(self, node_id)

    def append(self, entry: LogEntry, origin: str) -> None:
        # Entries appended while one is applied wait their turn: every replica
        # must see them after it, in the same order.
        self._queue.append((entry, origin))
        if self._draining:
            return
        self._draining = True
        try:
            while self._queue:
                entry, origin = self._queue.pop(0)
                self.entries.append(entry)
                for replica in self.replicas:
                    replica.apply(entry, origin)
        finally:
            self._draining = False


class LogMember:
    def __init__(self, log: InProcessLog, node_id: str) -> None:
        self.log = log
        self.node_id = node_id

    def attach(self, replica: Replica) -> None:
        self.log.replicas.append(replica)

    async def start(self) -> None:
        pass

    def append(self, entry: LogEntry) -> None:
        self.log.append(entry, self.node_id)

    def state(self) -> BrokerState:
        return BrokerState.CONNECTED

    def pending(self) -> int:
        return 0

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        pass


class Socket:
    """The transport side of a connection: what was written to it."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        pass


async def no_close(code: int, reason: str) -> None:
    pass


def frame(kind: str, **payload: object) -> bytes:
    return msgspec.json.encode({"type": kind, "payload": payload})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(f"sqlite:///{tmp_path}/replicas.db", wall_ms)
    await store.start()
    yield store
    await store.close()


def node(store: SQLiteStore, log: InProcessLog, node_id: str) -> Node:
    settings = Settings(database="sqlite:///unused.db", rate_limits="off")
    return Node(store, log.member(node_id), FanOut(1 << 20), settings, default_features)


def picture(node: Node) -> object:
    """What a replica believes about the cluster, comparable across nodes."""
    engine = node.parts.engine
    calls: Calls = node.feature(Calls)
    users = ("alice", "bob", "carol")
    return {
        "room": engine.room_users(ROOM),
        "statuses": {user: engine.presence.status(user) for user in users},
        "connections": {user: sorted(engine.connections_of(user)) for user in users},
        "typing": {
            c: engine.typing_rooms(c)
            for u in users
            for c in engine.connections_of(u)
            if engine.typing_rooms(c)
        },
        "calls": sorted((c.id, c.caller, c.callee, c.state) for c in calls.registry.calls()),
    }


async def test_two_replicas_fed_the_same_entries_converge(store: SQLiteStore) -> None:
    log = InProcessLog()
    a, b = node(store, log, "a"), node(store, log, "b")
    alice = a.open("127.0.0.1", no_close, Socket(), "alice")
    bob = b.open("127.0.0.1", no_close, Socket(), "bob")
    carol = b.open("127.0.0.1", no_close, Socket(), "carol")
    conns: list[tuple[Node, LocalConnection]] = [(a, alice), (b, bob), (b, carol)]
    for owner, conn in conns:
        await owner.receive(conn, frame("join_room", room_id=ROOM))
    await a.receive(alice, frame("typing", room_id=ROOM, is_typing=True))
    await b.receive(bob, frame("presence", status="away"))
    await a.receive(alice, frame("webrtc", type="offer", to_user_id="bob", data={"sdp": "v=0"}))
    assert picture(a) == picture(b)
    seen = picture(a)
    assert isinstance(seen, dict)
    assert [u.user_id for u in seen["room"].users] == ["alice", "bob", "carol"]
    assert seen["statuses"] == {"alice": "online", "bob": "away", "carol": "online"}
    assert seen["typing"] == {alice.id: (ROOM,)}
    assert [call[1:3] for call in seen["calls"]] == [("alice", "bob")]

    a.closed(alice, "test")  # the caller goes: the call ends and alice is offline everywhere
    await asyncio.sleep(0)
    assert picture(a) == picture(b)
    after = picture(b)
    assert isinstance(after, dict)
    assert after["statuses"]["alice"] == "offline"
    assert after["calls"] == [] and after["typing"] == {}
    assert [u.user_id for u in after["room"].users] == ["bob", "carol"]


async def test_a_snapshot_rebuilds_a_replica_that_missed_the_log(store: SQLiteStore) -> None:
    log = InProcessLog()
    a = node(store, log, "a")
    alice = a.open("127.0.0.1", no_close, Socket(), "alice")
    await a.receive(alice, frame("join_room", room_id=ROOM))
    await a.receive(alice, frame("presence", status="busy"))
    await a.receive(alice, frame("typing", room_id=ROOM, is_typing=True))
    late = node(store, log, "late")  # attached now: it saw none of that
    assert picture(late) != picture(a)
    late.replica.apply(a.replica.snapshot(), "a")
    assert picture(late) == picture(a)


def test_a_node_without_a_handler_for_a_protocol_type_refuses_to_start(tmp_path: Path) -> None:
    def without_ping(parts: NodeParts) -> list:  # type: ignore[type-arg]
        return [f for f in default_features(parts) if not isinstance(f, Ping)]

    settings = Settings(database=f"sqlite:///{tmp_path}/unit.db")
    store = SQLiteStore(settings.database, wall_ms)  # never started
    with pytest.raises(ValueError, match=r"no handler for \['ping'\]"):
        Node(store, InProcessLog().member("a"), FanOut(1 << 20), settings, without_ping)


async def test_a_created_room_is_announced_on_every_node_to_those_it_admits(
    store: SQLiteStore,
) -> None:
    log = InProcessLog()
    a, b = node(store, log, "a"), node(store, log, "b")
    sockets = {name: Socket() for name in ("alice", "bob", "carol", "anonymous")}
    a.open("127.0.0.1", no_close, sockets["alice"], "alice")
    b.open("127.0.0.1", no_close, sockets["bob"], "bob")
    b.open("127.0.0.1", no_close, sockets["carol"], "carol")
    b.open("127.0.0.1", no_close, sockets["anonymous"], None)  # not identified yet
    rooms: Rooms = a.feature(Rooms)
    await rooms.create_room("alice", "127.0.0.1", CreateRoom("plans", True, ["bob"]))
    await asyncio.sleep(0.01)  # the fan-out writes on the next loop turn
    told = {name: b'"room_created"' in s.written for name, s in sockets.items()}
    assert told == {"alice": True, "bob": True, "carol": False, "anonymous": False}
    await rooms.create_room("bob", "127.0.0.1", CreateRoom("lobby", False, []))
    await asyncio.sleep(0.01)
    told = {name: s.written.count(b'"room_created"') for name, s in sockets.items()}
    assert told == {"alice": 2, "bob": 2, "carol": 1, "anonymous": 0}


async def test_a_join_checked_before_a_removal_is_refused_on_every_replica(
    store: SQLiteStore,
) -> None:
    """The joiner's node read "a member" from the store, then the user was
    removed, and the removal reached the log first: the join must not let
    them back in, on any node."""
    log = InProcessLog()
    a, b = node(store, log, "a"), node(store, log, "b")
    bob = a.open("127.0.0.1", no_close, Socket(), "bob")
    await asyncio.sleep(0)
    log.append(MembershipChanged(ROOM, "bob", "removed", "alice", at=100.0), "b")
    log.append(Joined(bob.id, ROOM, checked_at=99.5), "a")  # read before the removal
    for replica in (a, b):
        assert not replica.parts.engine.is_member(bob.id, ROOM)
    log.append(Joined(bob.id, ROOM, checked_at=100.2), "a")  # too close to tell: refused too
    assert not a.parts.engine.is_member(bob.id, ROOM)
    log.append(Joined(bob.id, ROOM, checked_at=102.0), "a")  # read well after: the store's word
    for replica in (a, b):
        assert replica.parts.engine.is_member(bob.id, ROOM)
    log.append(Left(bob.id, "bob", ROOM, 103.0), "a")
    log.append(MembershipChanged(ROOM, "bob", "removed", "alice", at=110.0), "b")
    log.append(MembershipChanged(ROOM, "bob", "added", "alice", at=111.0), "b")
    log.append(Joined(bob.id, ROOM, checked_at=109.0), "a")  # added back: let in
    for replica in (a, b):
        assert replica.parts.engine.is_member(bob.id, ROOM)


class CountsFailOnce(SQLiteStore):
    """A store whose first unread read fails, as a database that is away does."""

    failed = False

    async def unread(self, user_id: str, room_ids: object = None) -> list:  # type: ignore[override, type-arg]
        if not self.failed:
            self.failed = True
            raise StoreUnavailable("the database is away")
        return await super().unread(user_id)


async def test_counts_that_cannot_be_read_at_connect_come_when_the_store_answers(
    tmp_path: Path,
) -> None:
    store = CountsFailOnce(f"sqlite:///{tmp_path}/flaky.db", wall_ms)
    await store.start()
    try:
        a = node(store, InProcessLog(), "a")
        socket = Socket()
        alice = a.open("127.0.0.1", no_close, socket, "alice")
        await a.receive(alice, frame("ping"))  # not held back by the failed counts
        await asyncio.sleep(0.01)  # the fan-out writes at the end of a loop turn
        assert b'"type":"pong"' in socket.written and b'"type":"unread"' not in socket.written
        for _ in range(40):
            if b'"type":"unread"' in socket.written:
                break
            await asyncio.sleep(0.05)
        assert b'"type":"unread"' in socket.written
    finally:
        await store.close()
