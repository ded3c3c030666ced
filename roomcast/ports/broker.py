"""The broker port: one ordered log of what happens to the shared live state.

Rooms, presence, typing and calls are state that every node must agree on:
a user who joins one room from two nodes must be announced once, a callee on
another node must ring, a busy callee is busy everywhere. Each node therefore
holds a *replica* of that state (the core's :class:`ChatEngine` and
:class:`CallRegistry`), and changes reach every replica as :class:`LogEntry`
values through one totally ordered log. A node never changes the shared
state directly: it appends an entry, and applies it when the log hands it
back, in the same position as every other node. Because the core is
deterministic (ids and times travel inside the entries), every replica makes
the same decisions, and each node sends the resulting frames to the
connections it holds itself.

In one process the log is a function call (:mod:`roomcast.adapters.local_broker`);
across processes it is a Redis stream (:mod:`roomcast.adapters.redis_broker`).

Chat messages are stored first and then appended (``MessageStored``), so
nothing unstored is ever broadcast. Their order in the log may differ from
their order in the database when two nodes commit at once; receivers restore
the per-room order with the room sequence (see :mod:`roomcast.core.ordering`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Protocol, Union

import msgspec


class Scope(msgspec.Struct, frozen=True, gc=False):
    """Whom a log entry concerns: one room, one user, or the whole cluster.

    Every node applies every entry today; a log partitioned by scope would
    hand a node only the rooms and users it serves, without changing the
    features that apply the entries.
    """

    kind: Literal["room", "user", "cluster"]
    key: int | str | None = None


CLUSTER = Scope("cluster")


def room_scope(room_id: int) -> Scope:
    return Scope("room", room_id)


def user_scope(user_id: str | None) -> Scope:
    return CLUSTER if user_id is None else Scope("user", user_id)


class LogEntry(msgspec.Struct, tag_field="kind", frozen=True, gc=False):
    """Base of every log entry. Subclasses name their ``tag`` and their scope.

    Entries are defined by the part of the server that applies them (the
    node's own below, each feature's in its module); their fields are the
    log's format, decoupled from the client protocol.
    """

    def scope(self) -> Scope:
        return CLUSTER


class Opened(LogEntry, tag="open", frozen=True, gc=False):
    """A connection was accepted by ``node`` (``user`` unknown yet in open mode)."""

    conn: str
    node: str
    user: str | None = None

    def scope(self) -> Scope:
        return user_scope(self.user)


class Identified(LogEntry, tag="identify", frozen=True, gc=False):
    conn: str
    user: str

    def scope(self) -> Scope:
        return user_scope(self.user)


class Closed(LogEntry, tag="close", frozen=True, gc=False):
    conn: str
    at: float
    wall: int
    user: str | None = None

    def scope(self) -> Scope:
        return user_scope(self.user)


class Tick(LogEntry, tag="tick", frozen=True, gc=False):
    """Time passed: deadlines due by ``at`` (typing, ringing calls) pass now."""

    at: float
    wall: int


class ConnectionState(msgspec.Struct, frozen=True, gc=False):
    conn: str
    user: str | None


class Snapshot(LogEntry, tag="snapshot", frozen=True, gc=False):
    """Everything ``node`` holds: the replicas replace their picture of it with this.

    ``parts`` holds each feature's share, encoded by that feature (its rooms,
    statuses, typing, calls). Sent when a node joins, after the log was
    interrupted (the broker restarted, the node could not reach it, or an
    entry could not be decoded), or when a node learns it was declared dead
    while it was in fact alive.
    """

    node: str
    connections: tuple[ConnectionState, ...]
    parts: dict[str, msgspec.Raw]
    at: float
    wall: int


class SnapshotRequest(LogEntry, tag="snapshot_request", frozen=True, gc=False):
    """Every node answers with its :class:`Snapshot` (a node joined or recovered).

    ``recovering``: the node was cut off from the log, and what it stored
    meanwhile reached no other node; the others re-read their rooms too.
    """

    node: str
    recovering: bool = False


class NodeGone(LogEntry, tag="node_gone", frozen=True, gc=False):
    """``node`` stopped refreshing its liveness: its connections are closed everywhere."""

    node: str
    at: float
    wall: int


#: The entries the node itself applies; features add theirs.
NODE_ENTRIES: tuple[type[LogEntry], ...] = (
    Opened,
    Identified,
    Closed,
    Tick,
    Snapshot,
    SnapshotRequest,
    NodeGone,
)


_encoder = msgspec.json.Encoder()
_lengths_decoder = msgspec.json.Decoder(list[Annotated[int, msgspec.Meta(ge=0)]])


class Unreadable(msgspec.Struct, frozen=True, gc=False):
    """In a decoded record, the place of an entry that could not be decoded."""

    error: str


#: The log record format this version writes and reads (a record carries it as
#: ``v``; the first format had none). Nodes of two formats cannot read each
#: other's records: a cluster is upgraded by stopping every node.
RECORD_FORMAT = 3

#: Most entries in one log record (what one loop turn's appends are cut into).
MAX_RECORD_ENTRIES = 512


class RecordUnreadable(Exception):
    """A log record whose framing is broken: its entries cannot be told apart."""


def encode_batch(encoded: list[bytes]) -> bytes:
    """Several encoded entries as one log record: a line with the entries' lengths
    (a JSON array), then the entries as one JSON array.

    The array is decoded in one call, as fast as before; the lengths are for
    when that fails: each entry is then cut out by its length and decoded on
    its own, so an entry that cannot be decoded takes nothing else with it.
    """
    return _encoder.encode(list(map(len, encoded))) + b"\n[" + b",".join(encoded) + b"]"


class LogCodec:
    """Log entries to bytes and back, for the entry types a node knows.

    Built from the types the node and its features declare, so that a new
    entry type is known to the log by being declared, not by a list kept in
    step here.
    """

    def __init__(self, entry_types: Iterable[type[LogEntry]]) -> None:
        types = tuple(entry_types)
        tags = [cls.__struct_config__.tag for cls in types]
        if len(set(tags)) != len(tags):
            raise ValueError(f"log entry tags used twice: {sorted(map(str, tags))}")
        self.entry_types = types
        union: Any = Union[types]  # noqa: UP007 - a union built from a tuple of types
        self._batch_decoder: msgspec.json.Decoder[list[Any]] = msgspec.json.Decoder(list[union])
        self._entry_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(union)

    @staticmethod
    def encode(entry: LogEntry) -> bytes:
        return _encoder.encode(entry)

    def decode(self, data: bytes) -> LogEntry:
        entry: LogEntry = self._entry_decoder.decode(data)
        return entry

    def decode_batch(self, record: bytes) -> list[LogEntry | Unreadable]:
        """The entries of a record in order, an :class:`Unreadable` in place of each
        one that does not decode; :class:`RecordUnreadable` if the framing itself
        is broken."""
        header, newline, array = record.partition(b"\n")
        if not newline or header[:1] != b"[":
            raise RecordUnreadable("no line of entry lengths")
        try:
            entries: list[Any] = self._batch_decoder.decode(array)
        except (msgspec.DecodeError, RecursionError):
            return self._decode_each(header, array)
        if len(entries) != (header.count(b",") + 1 if header != b"[]" else 0):
            raise RecordUnreadable(f"{len(entries)} entries, but lengths {header[:80]!r}")
        return entries

    def _decode_each(self, header: bytes, array: bytes) -> list[LogEntry | Unreadable]:
        """The entries of a record whose array did not decode as a whole, one by one."""
        try:
            lengths = _lengths_decoder.decode(header)
        except msgspec.DecodeError:
            raise RecordUnreadable(f"entry lengths {header[:80]!r}") from None
        size = sum(lengths) + max(len(lengths) - 1, 0) + 2  # the commas and brackets
        if size != len(array) or array[:1] != b"[":
            raise RecordUnreadable(f"entry lengths {header[:80]!r} do not fit the entries")
        entries: list[LogEntry | Unreadable] = []
        view = memoryview(array)
        position = 1
        for length in lengths:
            stop = position + length
            if array[stop : stop + 1] not in (b",", b"]"):
                raise RecordUnreadable(f"no entry ends at byte {stop}")
            try:
                entries.append(self._entry_decoder.decode(view[position:stop]))
            except (msgspec.DecodeError, RecursionError) as exc:
                entries.append(Unreadable(str(exc)))
            position = stop + 1
        return entries


class BrokerUnavailable(Exception):
    """The broker could not be reached when the node started."""


class BrokerState(enum.StrEnum):
    LOCAL = "local"  # one process: the log is a function call
    CONNECTED = "connected"
    DEGRADED = "degraded"  # the broker is unreachable: local users only, for now


class Replica(Protocol):
    """A node's side of the log: applies every entry, in log order."""

    #: The entry types this replica reads and writes.
    codec: LogCodec

    def apply(self, entry: LogEntry, origin: str) -> None:
        """Apply one entry; ``origin`` is the node that appended it."""

    def log_interrupted(self, unreadable: int = 0) -> None:
        """Entries may have been missed: every node must re-announce what it holds.

        ``unreadable``: how many entries were read but could not be decoded
        (they were skipped; their effects come back with the snapshots).
        """

    def nodes_alive(self, live: set[str]) -> None:
        """The nodes whose liveness is current: every other node has not refreshed
        its liveness for ``node_ttl`` and is gone. (A broker that cannot vouch for
        that, such as one whose Redis just restarted, does not call this.)"""


class Broker(Protocol):
    #: This node's id, unique in the cluster.
    node_id: str

    def attach(self, replica: Replica) -> None:
        """Hand every entry of the log to ``replica`` from now on."""

    async def start(self) -> None: ...

    def append(self, entry: LogEntry) -> None:
        """Append to the log. While the broker is unreachable the entry is applied
        locally only (the node keeps serving its own users) and the log is
        repaired with snapshots once the broker is back."""

    def state(self) -> BrokerState: ...

    def pending(self) -> int:
        """Entries this node appended that it has not applied yet."""

    async def ping(self) -> None:
        """Raise unless the broker answers."""

    async def close(self) -> None: ...
