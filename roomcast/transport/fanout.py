"""Corked fan-out: each frame built once, each connection written once per loop turn.

Sending one WebSocket frame per recipient per message costs one ``send()``
system call each; at chat-room rates that, not Python, is the limit. Instead:

* a server frame (header + JSON) is built once per message, whoever receives it;
* frames for a room during one event-loop iteration go into one
  :class:`RoomBatch`, shared by every member: at flush time the batch is
  joined once and the same bytes object is written to each member;
* directed frames (errors, ``room_users``, presence) are queued per
  connection, in order with the room batches that connection is part of;
* one ``call_soon`` per iteration flushes every connection that has output
  with a single ``transport.write``.

Ordering: a batch stays open for appends only while no member has received a
directed frame after it. When a directed frame is queued for a connection,
every still-open batch in that connection's queue is closed, so a later room
frame starts a new batch and cannot overtake the directed one.

Every operation costs O(1) per frame, whatever a client sends: closing the
open batches looks only at what was queued since the last directed frame
(each queue item is looked at once), and a connection has at most one unsent
pong (a newer ping's pong replaces it, as RFC 6455 section 5.5.3 allows), so
a burst of pings costs neither a rescan of the queue per ping nor a pong each.

Flow control is ours, since the library's writer is bypassed: after each
flush a connection whose transport buffer exceeds ``max_buffer`` bytes is
reported through ``on_overflow`` (the caller disconnects it as a slow
consumer), so one stuck reader never grows the server's memory unboundedly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from roomcast.ports.outlet import Writable
from roomcast.transport.frames import text_frame


class RoomBatch:
    __slots__ = ("_data", "frames", "room_id")

    def __init__(self, room_id: int) -> None:
        self.room_id = room_id
        self.frames: list[bytes] = []
        self._data: bytes | None = None

    def data(self) -> bytes:
        if self._data is None:
            self._data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        return self._data


class SendQueue:
    """One connection's outgoing side: what is queued for it, and its socket."""

    __slots__ = ("conn_id", "pong", "queue", "sealed", "sent_bytes", "transport")

    def __init__(self, conn_id: str, transport: Writable) -> None:
        self.conn_id = conn_id
        self.transport = transport
        self.queue: list[bytes | RoomBatch] = []
        self.sealed = 0  # queue items before this index hold no open batch
        self.pong = -1  # index of the unsent pong in the queue, if any
        self.sent_bytes = 0


class FanOut:
    """Every connection's send queue; implements :class:`~roomcast.ports.outlet.Outlet`."""

    def __init__(
        self,
        max_buffer: int,
        on_overflow: Callable[[str], None] = lambda conn_id: None,
    ) -> None:
        self.max_buffer = max_buffer
        #: Told of a connection whose socket buffer passed ``max_buffer``.
        self.on_overflow = on_overflow
        self._outlets: dict[str, SendQueue] = {}
        self._open_batches: dict[int, RoomBatch] = {}
        self._dirty: list[SendQueue] = []
        self._scheduled = False

    # -- connections -------------------------------------------------------------

    def add(self, conn_id: str, transport: Writable) -> None:
        self._outlets[conn_id] = SendQueue(conn_id, transport)

    def remove(self, conn_id: str) -> None:
        """Forget a connection; anything still queued for it is dropped."""
        outlet = self._outlets.pop(conn_id, None)
        if outlet is not None:
            outlet.queue.clear()

    def flush_connection(self, conn_id: str) -> None:
        """Write what is queued for one connection now (before a close frame)."""
        outlet = self._outlets.get(conn_id)
        if outlet is not None and outlet.queue:
            self._seal(outlet)  # its batches are joined now; later frames need new ones
            self._write(outlet)

    # -- sending -------------------------------------------------------------------

    def send(self, conn_ids: Iterable[str], frame: bytes) -> None:
        """Queue one frame for each of ``conn_ids``, in order with their room traffic."""
        for conn_id in conn_ids:
            outlet = self._outlets.get(conn_id)
            if outlet is None:
                continue
            self._seal(outlet)
            self._enqueue(outlet, frame)

    def send_pong(self, conn_id: str, frame: bytes) -> None:
        """Queue a pong, in order with the connection's other frames, replacing an
        unsent one: only the newest ping needs its answer."""
        outlet = self._outlets.get(conn_id)
        if outlet is None:
            return
        queue = outlet.queue
        if outlet.pong >= 0:
            if outlet.pong == len(queue) - 1:
                queue[-1] = frame  # nothing was queued after the older one
                return
            queue[outlet.pong] = b""  # superseded; the new pong goes last
        self._seal(outlet)
        self._enqueue(outlet, frame)
        outlet.pong = len(queue) - 1

    def send_room(self, room_id: int, conn_ids: Iterable[str], frame: bytes) -> None:
        """Queue a frame for every member of a room, sharing one buffer among them."""
        batch = self._open_batches.get(room_id)
        if batch is not None:
            batch.frames.append(frame)
            return
        batch = RoomBatch(room_id)
        batch.frames.append(frame)
        self._open_batches[room_id] = batch
        for conn_id in conn_ids:
            outlet = self._outlets.get(conn_id)
            if outlet is not None:
                self._enqueue(outlet, batch)

    def send_text(self, conn_ids: Iterable[str], payload: bytes) -> None:
        """The outlet port: a text message, framed here once for every recipient."""
        self.send(conn_ids, text_frame(payload))

    def send_room_text(self, room_id: int, conn_ids: Iterable[str], payload: bytes) -> None:
        self.send_room(room_id, conn_ids, text_frame(payload))

    def _seal(self, outlet: SendQueue) -> None:
        """Close every batch still open in this connection's queue to further frames.

        Only items queued since the last seal can hold one: a closed batch
        never opens again, so each item is looked at once.
        """
        queue = outlet.queue
        open_batches = self._open_batches
        for index in range(outlet.sealed, len(queue)):
            item = queue[index]
            if isinstance(item, RoomBatch) and open_batches.get(item.room_id) is item:
                del open_batches[item.room_id]
        outlet.sealed = len(queue)

    def membership_changed(self, room_id: int) -> None:
        """Close the room's open batch: its recipient list is no longer current.

        Without this a member who joined during this loop turn would miss the
        rest of the batch, and one who left would still receive it.
        """
        self._open_batches.pop(room_id, None)

    def _enqueue(self, outlet: SendQueue, item: bytes | RoomBatch) -> None:
        if not outlet.queue:
            self._dirty.append(outlet)
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self.flush)
        outlet.queue.append(item)

    # -- flushing ------------------------------------------------------------------

    def flush(self) -> None:
        self._scheduled = False
        self._open_batches.clear()
        dirty, self._dirty = self._dirty, []
        for outlet in dirty:
            if outlet.queue:
                self._write(outlet)

    def _write(self, outlet: SendQueue) -> None:
        queue = outlet.queue
        outlet.queue = []
        outlet.sealed = 0
        outlet.pong = -1
        transport = outlet.transport
        if transport.is_closing():
            return
        if len(queue) == 1:
            item = queue[0]
            data = item if isinstance(item, bytes) else item.data()
        else:
            data = b"".join(item if isinstance(item, bytes) else item.data() for item in queue)
        # A fresh bytes object per write: the transport may keep a view of it.
        transport.write(data)
        outlet.sent_bytes += len(data)
        if transport.get_write_buffer_size() > self.max_buffer:
            self.on_overflow(outlet.conn_id)

    def connection_count(self) -> int:
        return len(self._outlets)
