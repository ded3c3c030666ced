"""Cluster log records: every entry decodes on its own, and a bad one takes nothing with it."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest

from roomcast.adapters.redis_broker import RedisBroker
from roomcast.features.calls import CallHungUp, CallRejected, CallSignalled
from roomcast.features.membership import MembershipChanged, RoomChanged
from roomcast.features.messages import MessageChanged, MessageStored
from roomcast.features.notifications import NotificationsMarkedRead, Notified, Retracted
from roomcast.features.ping import Pinged
from roomcast.features.presence import ActivitySeen, StatusSet
from roomcast.features.reads import ReadMoved
from roomcast.features.rooms import Joined, Left, RoomAnnounced
from roomcast.features.typing import TypingSet
from roomcast.ports.broker import (
    RECORD_FORMAT,
    Closed,
    ConnectionState,
    Identified,
    LogCodec,
    LogEntry,
    NodeGone,
    Opened,
    RecordUnreadable,
    Snapshot,
    SnapshotRequest,
    Tick,
    Unreadable,
    encode_batch,
)
from roomcast.protocol import ChatMessage, Notification, Role, RoomInfo, ThreadUpdated

#: Raw JSON as clients send it: whitespace, newlines, and the framing's own ":" and ",".
RAW = msgspec.Raw(b'{"sdp": "v=0\\r\\n",\n "n": [1, 2]  , "x:": ",3:"}')

EVERY_KIND: list[LogEntry] = [
    Opened("c1", "node-a", "alice"),
    Opened("c2", "node-a"),
    Identified("c2", "bob"),
    Joined("c1", 7, seq_floor=3, since=2),
    CallSignalled("c1", "alice", "offer", "bob", None, RAW, RAW, 1.5, 1700, "call-1"),
    MessageStored(ChatMessage(1, 7, "alice", "hi, 12:30", "text", 1700, None, [], "m-1"), 4),
    MessageChanged(7, msgspec.Raw(b'{"type":"message_delete","payload":{}}')),
    Tick(2.5, 1800),
    Snapshot(
        "node-a",
        (ConnectionState("c1", "alice"),),
        {"calls": RAW, "rooms": msgspec.Raw(b'{"rooms":{"c1":[7]}}')},
        3.0,
        1900,
    ),
    SnapshotRequest("node-b"),
    NodeGone("node-c", 4.0, 2000),
    Closed("c1", 5.0, 2100, "alice"),
    Left("c1", "alice", None, 5.5),
    TypingSet("c1", 7, True, 6.0),
    StatusSet("c1", "alice", "away"),
    StatusSet("c1", "alice", "dnd", "focus: deep work", 1_900_000_000_000),
    ActivitySeen("alice", 2050),
    Pinged("c1", None),
    CallHungUp("c1", "alice", "call-1", 2200),
    CallRejected("c3", "bob", "call-2", 2300),
    RoomAnnounced(RoomInfo(8, "plans", True, "alice", 2400, ["alice", "bob"], 2)),
    MembershipChanged(8, "bob", "removed", "alice", reason="banned", waiter="call:1"),
    MembershipChanged(8, "carol", "role", "alice", Role.MODERATOR),
    MembershipChanged(8, "bob", "unbanned", "alice", waiter="call:2"),
    RoomChanged(RoomInfo(8, "plans", True, "alice", 2400, [], 2, topic="t", archived_at=2500)),
    MessageStored(
        ChatMessage(9, 7, "bob", "re", "text", 2600, 1, ["alice"]),
        5,
        ThreadUpdated(7, 1, 1, 2600, ["bob"]),
    ),
    MessageChanged(7, msgspec.Raw(b"{}"), ThreadUpdated(7, 1, 0, None, []), recount=True),
    Notified("alice", Notification(3, "mention", 7, 9, 1, "bob", "re", 2600)),
    Retracted("alice", (3, 4), 7),
    NotificationsMarkedRead("alice", (5,), (7,)),
    ReadMoved("alice", 7, None, 9),
    ReadMoved("alice", 7, 1, 9),
]

CODEC = LogCodec(dict.fromkeys(type(entry) for entry in EVERY_KIND))
encode_input = CODEC.encode
decode_batch = CODEC.decode_batch


#: Entries no decoder accepts: not JSON, cut short, no such kind, nested past the stack.
UNDECODABLE = [
    b"not json",
    b'{"kind":"open","conn":"c9"',
    b'{"kind":"teleport","conn":"c9"}',
    b'{"kind":"open","conn":7,"node":"n"}',
    b'{"kind":"call_signal","conn":"c","data":' + b"[" * 5000 + b"]" * 5000 + b',"at":0}',
]


def test_every_kind_of_entry_survives_a_record_byte_for_byte() -> None:
    record = encode_batch([encode_input(entry) for entry in EVERY_KIND])
    decoded = decode_batch(record)
    assert [type(e) for e in decoded] == [type(e) for e in EVERY_KIND]
    assert [encode_input(e) for e in decoded if not isinstance(e, Unreadable)] == [
        encode_input(e) for e in EVERY_KIND
    ]
    request = decoded[4]
    assert isinstance(request, CallSignalled)
    assert bytes(request.data) == bytes(RAW)  # relayed untouched, whitespace and all


def test_a_record_is_the_entries_lengths_then_the_entries() -> None:
    assert encode_batch([b'{"a":1}', b"[]"]) == b'[7,2]\n[{"a":1},[]]'
    assert encode_batch([]) == b"[]\n[]"
    assert decode_batch(b"[]\n[]") == []


@pytest.mark.parametrize("bad", UNDECODABLE)
def test_an_undecodable_entry_in_the_middle_leaves_its_neighbours_in_order(bad: bytes) -> None:
    before, after = EVERY_KIND[:6], EVERY_KIND[6:]
    record = encode_batch([*map(encode_input, before), bad, *map(encode_input, after)])
    decoded = decode_batch(record)
    assert len(decoded) == len(EVERY_KIND) + 1
    assert isinstance(decoded[6], Unreadable) and decoded[6].error
    good = decoded[:6] + decoded[7:]
    assert [encode_input(e) for e in good if not isinstance(e, Unreadable)] == [
        encode_input(e) for e in EVERY_KIND
    ]


def test_several_undecodable_entries_each_keep_their_place() -> None:
    good = encode_input(Tick(1.0, 1))
    decoded = decode_batch(encode_batch([UNDECODABLE[0], good, UNDECODABLE[4], UNDECODABLE[2]]))
    assert [isinstance(e, Unreadable) for e in decoded] == [True, False, True, True]


@pytest.mark.parametrize(
    "record",
    [
        b'[{"kind":"tick","at":1,"wall":1}]',  # no lengths (the old format)
        b"x\n[{}]",  # not lengths
        b"[-2]\n[{}]",
        b"[7]\n[{}]",  # longer than the entries
        b'[2,3]\n[{},{"a"}]',
        b'[6,3]\n[{"a":1},{}]',  # the right size, cut in the wrong place
        b"[1]\n[]",  # decodes, but not as many entries as said
        b'[31]\n[{"kind":"tick","at":1,"wall":1}]junk',
    ],
)
def test_broken_framing_makes_the_whole_record_unreadable(record: bytes) -> None:
    with pytest.raises(RecordUnreadable):
        decode_batch(record)


# -- the Redis broker's reading side, without Redis ------------------------------------


class RecordingReplica:
    codec = CODEC

    def __init__(self) -> None:
        self.applied: list[tuple[str, str]] = []  # (origin, kind of entry)
        self.interruptions: list[int] = []

    def apply(self, entry: LogEntry, origin: str) -> None:
        self.applied.append((origin, type(entry).__name__))

    def log_interrupted(self, unreadable: int = 0) -> None:
        self.interruptions.append(unreadable)

    def nodes_alive(self, live: set[str]) -> None:
        pass


def record(origin: str, first: int, entries: list[bytes]) -> dict[bytes, bytes]:
    """A stream record's fields as redis-py hands them to the reader."""
    return {
        b"v": str(RECORD_FORMAT).encode(),
        b"o": origin.encode(),
        b"n": str(first).encode(),
        b"c": str(len(entries)).encode(),
        b"e": encode_batch(entries),
    }


def make_broker() -> tuple[RedisBroker, RecordingReplica]:
    broker = RedisBroker("redis://127.0.0.1:9/0", node_id="me")  # never connected
    replica = RecordingReplica()
    broker.attach(replica)
    return broker, replica


def test_the_rest_of_a_record_is_applied_and_one_resynchronisation_follows() -> None:
    broker, replica = make_broker()
    tick = encode_input(Tick(1.0, 1))
    broker._receive(record("other", 1, [encode_input(Opened("c1", "other")), UNDECODABLE[1], tick]))
    broker._receive(record("other", 4, [tick, UNDECODABLE[4]]))
    assert replica.applied == [("other", "Opened"), ("other", "Tick"), ("other", "Tick")]
    assert broker._applied["other"] == 5  # the counters moved past the skipped entries
    broker._resync_if_unreadable()
    assert replica.interruptions == [2]
    broker._resync_if_unreadable()
    assert replica.interruptions == [2]  # nothing new: no second resynchronisation
    # Read again: the entries already passed are not applied (or counted) twice.
    broker._receive(record("other", 1, [encode_input(Opened("c1", "other")), UNDECODABLE[1], tick]))
    broker._resync_if_unreadable()
    assert replica.interruptions == [2]
    assert len(replica.applied) == 3


def test_resynchronisations_are_held_back_not_dropped() -> None:
    broker, replica = make_broker()
    broker._receive(record("other", 1, [UNDECODABLE[0]]))
    broker._resync_if_unreadable()
    broker._receive(record("other", 2, [UNDECODABLE[0], UNDECODABLE[0]]))
    broker._resync_if_unreadable()  # within the interval: held back
    assert replica.interruptions == [1]
    broker._resync_after = -math.inf  # the interval has passed
    broker._resync_if_unreadable()
    assert replica.interruptions == [1, 2]


def test_a_record_with_broken_framing_passes_its_counted_entries() -> None:
    broker, replica = make_broker()
    fields = record("other", 1, [encode_input(Tick(1.0, 1))] * 3)
    fields[b"e"] = fields[b"e"][:-5]  # cut short
    broker._receive(fields)
    broker._receive(record("other", 4, [encode_input(Tick(2.0, 2))]))
    assert replica.applied == [("other", "Tick")]  # only the entry after the broken record
    assert broker._applied["other"] == 4
    broker._resync_if_unreadable()
    assert replica.interruptions == [3]


def test_a_record_without_its_fields_is_unreadable_as_a_whole() -> None:
    broker, replica = make_broker()
    broker._receive({b"o": b"other", b"n": b"1", b"b": b"[]"})  # the old format
    broker._receive({b"x": b"y"})
    assert replica.applied == []
    broker._resync_if_unreadable()
    assert replica.interruptions == [2]


def test_this_nodes_own_unreadable_entry_is_applied_from_what_it_appended() -> None:
    """The others skip it and resynchronise; this node still has the entry it appended."""
    broker, replica = make_broker()
    own = [Opened("c1", "me", "alice"), Joined("c1", 7), Closed("c1", 1.0, 1)]
    broker._counter = 3
    broker._in_flight = dict(enumerate(own, start=1))
    assert broker.pending() == 3
    broker._receive(record("me", 1, [encode_input(own[0]), UNDECODABLE[4], encode_input(own[2])]))
    assert replica.applied == [("me", "Opened"), ("me", "Joined"), ("me", "Closed")]
    assert broker.pending() == 0
    assert broker._in_flight == {}
    broker._resync_if_unreadable()
    assert replica.interruptions == [1]


def test_records_of_another_format_are_skipped_and_named_once() -> None:
    broker, replica = make_broker()
    legacy = {b"o": b"old", b"n": b"1", b"b": b"[" + encode_input(Tick(1.0, 1)) + b"]"}
    newer = {
        **record("new", 1, [encode_input(Tick(1.0, 1))]),
        b"v": str(RECORD_FORMAT + 1).encode(),
    }
    for fields in (legacy, legacy, newer):
        broker._receive(fields)
    assert replica.applied == []
    assert broker._foreign_nodes == {"old", "new"}
    broker._resync_if_unreadable()
    assert replica.interruptions == [3]


@pytest.mark.parametrize("count", [b"0", b"513", b"1000000000", b"-1"])
def test_a_record_claiming_an_impossible_count_cannot_move_its_writers_counter(
    count: bytes,
) -> None:
    broker, replica = make_broker()
    broker._receive({**record("other", 1, []), b"c": count})
    broker._receive(record("other", 1, [encode_input(Tick(1.0, 1))]))
    assert replica.applied == [("other", "Tick")]
    assert broker._applied["other"] == 1


def test_every_kind_of_entry_a_node_declares_is_covered_here(tmp_path: Path) -> None:
    from roomcast.adapters.local_broker import LocalBroker
    from roomcast.adapters.sqlite_store import SQLiteStore
    from roomcast.clock import wall_ms
    from roomcast.config import Settings
    from roomcast.features import default_features
    from roomcast.node.node import Node
    from roomcast.transport.fanout import FanOut

    settings = Settings(database=f"sqlite:///{tmp_path}/unit.db")
    store = SQLiteStore(settings.database, wall_ms)  # never started: nothing here writes
    node = Node(store, LocalBroker(), FanOut(1 << 20), settings, default_features)
    assert set(node.replica.codec.entry_types) == set(CODEC.entry_types)
