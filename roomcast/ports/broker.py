"""The broker port: one ordered log of what happens to the shared live state.

Rooms, presence, typing and calls are state that every node must agree on:
a user who joins one room from two nodes must be announced once, a callee on
another node must ring, a busy callee is busy everywhere. Each node therefore
holds a *replica* of that state (the core's :class:`ChatEngine` and
:class:`CallRegistry`), and changes reach every replica as :data:`Input`
entries through one totally ordered log. A node never changes the shared
state directly: it appends an input, and applies it when the log hands it
back, in the same position as every other node. Because the core is
deterministic (ids and times travel inside the inputs), every replica makes
the same decisions, and each node sends the resulting frames to the
connections it holds itself.

In one process the log is a function call (:mod:`roomcast.adapters.local_broker`);
across processes it is a Redis stream (:mod:`roomcast.adapters.redis_broker`).

Chat messages are stored first and then appended (:class:`MessageStored`), so
nothing unstored is ever broadcast. Their order in the log may differ from
their order in the database when two nodes commit at once; receivers restore
the per-room order with the room sequence (see :mod:`roomcast.core.ordering`).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Protocol

import msgspec

from roomcast.protocol import ChatMessage, Status


class _Input(msgspec.Struct, tag_field="kind", frozen=True, gc=False):
    pass


class Opened(_Input, tag="open", frozen=True, gc=False):
    """A connection was accepted by ``node`` (``user`` unknown yet in open mode)."""

    conn: str
    node: str
    user: str | None = None


class Identified(_Input, tag="identify", frozen=True, gc=False):
    conn: str
    user: str


class Closed(_Input, tag="close", frozen=True, gc=False):
    conn: str
    at: float
    wall: int


class Joined(_Input, tag="join", frozen=True, gc=False):
    conn: str
    room: int
    # The room's last sequence number when the joining node looked it up:
    # where that node starts counting if it has seen no message of the room.
    seq_floor: int = 0
    since: int | None = None


class ClientRequest(_Input, tag="request", frozen=True, gc=False):
    """A client request that changes shared state, as the client sent it.

    ``data`` is the request's JSON, already decoded and accepted once by the
    node that received it; every replica decodes it again with the protocol
    module and applies it at the same point of the log.
    """

    conn: str
    data: msgspec.Raw
    at: float  # the receiving node's clock (seconds), for deadlines
    wall: int  # milliseconds since the epoch, for records
    new_id: str = ""  # the id a new call gets


class MessageStored(_Input, tag="message", frozen=True, gc=False):
    """A chat message was committed with room sequence ``seq``."""

    message: ChatMessage
    seq: int


class RoomFrame(_Input, tag="room_frame", frozen=True, gc=False):
    """A committed change to a message (edit, delete, reaction), encoded once."""

    room: int
    frame: msgspec.Raw


class Tick(_Input, tag="tick", frozen=True, gc=False):
    """Time passed: typing indicators and ringing calls due by ``at`` end now."""

    at: float
    wall: int


class ConnectionState(msgspec.Struct, frozen=True, gc=False):
    conn: str
    user: str | None
    rooms: tuple[int, ...] = ()
    status: Status = "online"
    typing: tuple[int, ...] = ()  # rooms this connection is typing in


class CallState(msgspec.Struct, frozen=True, gc=False):
    id: str
    caller: str
    callee: str
    caller_conn: str
    media: msgspec.Raw
    started_at: int
    ring_deadline: float
    ringing_conns: tuple[str, ...] = ()
    callee_conn: str | None = None
    answered_at: int | None = None


class Snapshot(_Input, tag="snapshot", frozen=True, gc=False):
    """Everything ``node`` holds: the replicas replace their picture of it with this.

    Sent when a node joins, after the log was interrupted (the broker
    restarted, the node could not reach it, or an entry could not be decoded),
    or when a node learns it was declared dead while it was in fact alive.
    """

    node: str
    connections: tuple[ConnectionState, ...]
    calls: tuple[CallState, ...]
    at: float
    wall: int


class SnapshotRequest(_Input, tag="snapshot_request", frozen=True, gc=False):
    """Every node answers with its :class:`Snapshot` (a node joined or recovered).

    ``recovering``: the node was cut off from the log, and what it stored
    meanwhile reached no other node; the others re-read their rooms too.
    """

    node: str
    recovering: bool = False


class NodeGone(_Input, tag="node_gone", frozen=True, gc=False):
    """``node`` stopped refreshing its liveness: its connections are closed everywhere."""

    node: str
    at: float
    wall: int


Input = (
    Opened
    | Identified
    | Closed
    | Joined
    | ClientRequest
    | MessageStored
    | RoomFrame
    | Tick
    | Snapshot
    | SnapshotRequest
    | NodeGone
)

_encoder = msgspec.json.Encoder()
_batch_decoder: msgspec.json.Decoder[list[Input]] = msgspec.json.Decoder(list[Input])
_entry_decoder: msgspec.json.Decoder[Input] = msgspec.json.Decoder(Input)
_lengths_decoder = msgspec.json.Decoder(list[Annotated[int, msgspec.Meta(ge=0)]])


def encode_input(entry: Input) -> bytes:
    return _encoder.encode(entry)


class Unreadable(msgspec.Struct, frozen=True, gc=False):
    """In a decoded record, the place of an entry that could not be decoded."""

    error: str


#: The log record format this version writes and reads (a record carries it as
#: ``v``; the first format had none). Nodes of two formats cannot read each
#: other's records: a cluster is upgraded by stopping every node.
RECORD_FORMAT = 2

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


def decode_batch(record: bytes) -> list[Input | Unreadable]:
    """The entries of a record in order, an :class:`Unreadable` in place of each one
    that does not decode; :class:`RecordUnreadable` if the framing itself is broken."""
    header, newline, array = record.partition(b"\n")
    if not newline or header[:1] != b"[":
        raise RecordUnreadable("no line of entry lengths")
    try:
        entries: list[Any] = _batch_decoder.decode(array)
    except (msgspec.DecodeError, RecursionError):
        return _decode_each(header, array)
    if len(entries) != (header.count(b",") + 1 if header != b"[]" else 0):
        raise RecordUnreadable(f"{len(entries)} entries, but lengths {header[:80]!r}")
    return entries


def _decode_each(header: bytes, array: bytes) -> list[Input | Unreadable]:
    """The entries of a record whose array did not decode as a whole, one by one."""
    try:
        lengths = _lengths_decoder.decode(header)
    except msgspec.DecodeError:
        raise RecordUnreadable(f"entry lengths {header[:80]!r}") from None
    size = sum(lengths) + max(len(lengths) - 1, 0) + 2  # the commas and brackets
    if size != len(array) or array[:1] != b"[":
        raise RecordUnreadable(f"entry lengths {header[:80]!r} do not fit the entries")
    entries: list[Input | Unreadable] = []
    view = memoryview(array)
    position = 1
    for length in lengths:
        stop = position + length
        if array[stop : stop + 1] not in (b",", b"]"):
            raise RecordUnreadable(f"no entry ends at byte {stop}")
        try:
            entries.append(_entry_decoder.decode(view[position:stop]))
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

    def apply(self, entry: Input, origin: str) -> None:
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

    def append(self, entry: Input) -> None:
        """Append to the log. While the broker is unreachable the entry is applied
        locally only (the node keeps serving its own users) and the log is
        repaired with snapshots once the broker is back."""

    def state(self) -> BrokerState: ...

    def pending(self) -> int:
        """Entries this node appended that it has not applied yet."""

    async def ping(self) -> None:
        """Raise unless the broker answers."""

    async def close(self) -> None: ...
