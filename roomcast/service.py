"""The chat service: requests in, store and core consulted, frames out.

This is where I/O meets the rules. For each decoded request it checks what
needs stored data (rooms, authors) against the store, lets the
:class:`~roomcast.core.engine.ChatEngine` decide who is told what, encodes
each resulting event once and publishes it through the broker.

Chat messages are never awaited one by one: a chat request is submitted to the
store's group commit and the connection moves on to its next request; the
message is published when its transaction commits. Because commits resolve in
submission order, delivery order equals id order.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import unicodedata
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn

import msgspec

from roomcast.config import Settings
from roomcast.core.calls import Call, CallEffect, CallRecord, CallRegistry, CallState
from roomcast.core.deliveries import Delivery, ToConnections, ToRoom
from roomcast.core.engine import ChatEngine
from roomcast.core.limits import (
    CLASS_OF_TYPE,
    CreationLimiter,
    MessageClass,
    RateLimiter,
    parse_rates,
)
from roomcast.core.ordering import RoomSequencer
from roomcast.metrics import Metrics
from roomcast.ports import broker as log_entries
from roomcast.ports.broker import Broker, Input
from roomcast.ports.group_commit import Done
from roomcast.ports.store import (
    DeleteMessage,
    EditMessage,
    InsertMessage,
    Operation,
    Outcome,
    ProbeWrite,
    Result,
    Room,
    RoomLimitReached,
    Store,
    StoreUnavailable,
    ToggleReaction,
)
from roomcast.protocol import (
    MAX_MEDIA_BYTES,
    CallEndRequest,
    CallRejectRequest,
    ChatMessage,
    ChatRequest,
    Connected,
    CreateRoom,
    ErrorCode,
    Event,
    HistoryGap,
    JoinRoomRequest,
    LeaveRoomRequest,
    MessageDeleted,
    MessageDeleteRequest,
    MessageEdited,
    MessageEditRequest,
    MessageReaction,
    MessageReactionRequest,
    PingRequest,
    Pong,
    PresenceRequest,
    ProtocolError,
    Request,
    TypingRequest,
    WebRTCRequest,
    decode_client,
    encode,
    encode_request,
    error_event,
)
from roomcast.transport.fanout import FanOut, Writable
from roomcast.transport.frames import text_frame

log = logging.getLogger("roomcast.service")

#: Requests that change shared state and so travel through the log (besides
#: ping, which does when this node has entries in flight).
_LOGGED_REQUESTS = (
    TypingRequest,
    PresenceRequest,
    LeaveRoomRequest,
    WebRTCRequest,
    CallEndRequest,
    CallRejectRequest,
    PingRequest,
)

#: Rooms whose missed messages are read from the database at once after the log
#: was interrupted.
_CATCH_UP_AT_ONCE = 8

#: WebSocket close code for policy violations (floods, slow consumers).
CLOSE_POLICY_VIOLATION = 1008


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False, slots=True)
class Connection:
    """One WebSocket connection, as the service sees it."""

    id: str
    remote: str
    close: Callable[[int, str], Coroutine[Any, Any, None]]
    abort: Callable[[], None]
    # True once the socket is closing; checked after awaits, since the
    # connection's cleanup waits for a request in flight to finish.
    gone: Callable[[], bool]
    user_id: str | None = None
    closing: bool = False  # a close frame is on its way: nothing more is sent or read
    last_seen: float = 0.0  # loop time of the last frame received (idle detection)

    @property
    def ended(self) -> bool:
        """Closing, closed, or its socket already going: nothing more to do for it."""
        return self.closing or self.closed or self.gone()

    closed: bool = False


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

#: Why the store refused an operation, as the client is told.
_REFUSALS = {
    Outcome.NOT_FOUND: (ErrorCode.NOT_FOUND, "message {id} not found"),
    Outcome.FORBIDDEN: (ErrorCode.FORBIDDEN, "message {id} belongs to another user"),
    Outcome.CONFLICT: (
        ErrorCode.INVALID_MESSAGE,
        "payload.client_msg_id: already used for message {id} in another room",
    ),
}


class ChatService:
    def __init__(
        self,
        store: Store,
        broker: Broker,
        settings: Settings,
        metrics: Metrics | None = None,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.store = store
        self.broker = broker
        self.node_id = broker.node_id
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.fanout = FanOut(settings.max_send_buffer, self._slow_consumer)
        self.limiter = (
            None
            if settings.rate_limits == "off"
            else RateLimiter(
                parse_rates("" if settings.rate_limits == "default" else settings.rate_limits),
                flood_strikes=settings.flood_strikes,
            )
        )
        self.creation_limiter = (
            None
            if self.limiter is None
            else CreationLimiter(self.limiter.rates[MessageClass.ROOMS])
        )
        self.engine = ChatEngine(settings.typing_timeout)
        self.calls = CallRegistry(
            self.engine,
            new_id=lambda: uuid.uuid4().hex,
            ring_timeout=settings.ring_timeout,
            require_shared_room=not settings.allow_calls_outside_rooms,
        )
        self.sequencer: RoomSequencer[bytes] = RoomSequencer(settings.gap_wait, self._now)
        self._clock_ms = clock_ms
        self._connections: dict[str, Connection] = {}  # this node's own
        self._own_by_user: dict[str, set[str]] = {}  # this node's, by user
        self._node_of: dict[str, str] = {}  # every connection in the replica -> its node
        self._announce_due = False  # a snapshot waits for this node's entries in flight
        # Nodes whose snapshot this node waits for before it is ready (None: not asked yet).
        self._awaiting_snapshots: set[str] | None = None
        self._ready_by = math.inf
        # Local connections waiting for their join or leave to come back from the log.
        self._awaiting: dict[str, asyncio.Future[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = math.inf
        self._tick_sent = -math.inf  # the time of this node's last tick
        self._gap_timer: asyncio.TimerHandle | None = None
        self._write_probe: asyncio.Future[bool] | None = None  # see writes_work
        self._catching_up: asyncio.Task[None] | None = None  # see _catch_up_rooms
        self._catch_up_again = False
        self._background: set[asyncio.Task[None]] = set()
        broker.attach(self)
        self.metrics.gauge(
            "roomcast_connections", "Open WebSocket connections.", lambda: len(self._connections)
        )
        self.metrics.gauge(
            "roomcast_users", "Users with at least one connection.", self.engine.presence.user_count
        )
        self.metrics.gauge(
            "roomcast_rooms", "Rooms with at least one connection.", self.engine.rooms.room_count
        )
        self.metrics.gauge("roomcast_calls", "Calls ringing or active.", self.calls.active_count)

    # -- delivering to this node's connections ----------------------------------------

    def deliver_room(self, room_id: int, frame: bytes, except_user: str | None = None) -> None:
        members = self.engine.rooms.connections(room_id)
        if except_user is None:
            self.fanout.send_room(room_id, members, frame)
        else:
            skip = set(self.engine.connections_of(except_user))
            self.fanout.send([c for c in members if c not in skip], frame)

    def frame(self, event: Event) -> bytes:
        return text_frame(encode(event, self._clock_ms()))

    def send(self, conn: Connection, event: Event) -> None:
        self.fanout.send((conn.id,), self.frame(event))

    def publish(self, deliveries: list[Delivery]) -> None:
        """Send what the core decided to the connections of this node it concerns."""
        out = self.metrics.messages_out
        for delivery in deliveries:
            if isinstance(delivery, ToRoom):
                recipients = len(self.engine.rooms.connections(delivery.room_id))
                if not recipients:
                    continue
                self.metrics.fanout.observe(recipients)
                out[delivery.event.TYPE] += recipients
                self.deliver_room(
                    delivery.room_id, self.frame(delivery.event), delivery.except_user
                )
            elif isinstance(delivery, ToConnections):
                local = [c for c in delivery.conn_ids if c in self._connections]
                if local:
                    out[delivery.event.TYPE] += len(local)
                    self.fanout.send(local, self.frame(delivery.event))

    # -- the log: every change to shared state goes through it ---------------------------

    def _append(self, entry: Input) -> None:
        self.broker.append(entry)

    def apply(self, entry: Input, origin: str) -> None:
        """Apply one log entry to this node's replica and tell local connections."""
        mine = origin == self.node_id
        try:
            self._apply(entry, mine)
        finally:
            if mine and self._announce_due:
                self._announce()

    def _apply(self, entry: Input, mine: bool) -> None:
        if isinstance(entry, log_entries.MessageStored):
            self._apply_message(entry.message, entry.seq)
        elif isinstance(entry, log_entries.ClientRequest):
            self._apply_request(entry, mine)
        elif isinstance(entry, log_entries.RoomFrame):
            self.deliver_room(entry.room, text_frame(bytes(entry.frame)))
        elif isinstance(entry, log_entries.Joined):
            self._apply_join(entry)
        elif isinstance(entry, log_entries.Opened):
            self._add_connection(entry.conn, entry.node, entry.user)
        elif isinstance(entry, log_entries.Identified):
            if entry.conn in self._node_of and self.engine.user_of(entry.conn) is None:
                self.engine.identify(entry.conn, entry.user)
        elif isinstance(entry, log_entries.Closed):
            self._remove_connection(entry.conn, entry.at, entry.wall, mine)
        elif isinstance(entry, log_entries.Tick):
            self._apply_calls(self.calls.expire(entry.at, entry.wall), mine)
            self.publish(self.engine.expire(entry.at))
            self._arm_timer()
        elif isinstance(entry, log_entries.NodeGone):
            self._apply_node_gone(entry, mine)
        elif isinstance(entry, log_entries.SnapshotRequest):
            self._announce()
            if entry.recovering and not mine:
                self._catch_up_rooms()
        elif isinstance(entry, log_entries.Snapshot):
            self._apply_snapshot(entry, mine)

    def _settle(self, conn_id: str) -> None:
        """The local connection's awaited entry has been applied."""
        waiting = self._awaiting.pop(conn_id, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def _add_connection(self, conn_id: str, node: str, user_id: str | None) -> None:
        if conn_id in self._node_of:
            return
        self._node_of[conn_id] = node
        self.engine.open(conn_id, user_id)

    def _remove_connection(self, conn_id: str, at: float, wall: int, record: bool) -> None:
        if self._node_of.pop(conn_id, None) is None:
            return
        self._settle(conn_id)
        for room_id in self.engine.rooms.rooms_of(conn_id):
            self.fanout.membership_changed(room_id)
        user_id = self.engine.user_of(conn_id)
        self._apply_calls(self.calls.disconnected(conn_id, wall), record)
        self.publish(self.engine.close(conn_id, at))
        # The user's shared rate bucket lives as long as they have a connection here.
        if self.limiter is not None and user_id is not None and not self._holds_user(user_id):
            self.limiter.forget_user(user_id)

    def _holds_user(self, user_id: str) -> bool:
        return user_id in self._own_by_user

    def _apply_message(self, message: ChatMessage, seq: int) -> None:
        room_id = message.room_id
        # Typing ends in log order; the message itself goes out in room order.
        typing_ended = self.engine.message_stored(message)
        if typing_ended:
            self.publish(typing_ended)
        released = self.sequencer.offer(room_id, seq, self.frame(message))
        if released:
            self._send_chat(room_id, released)
        else:
            self._arm_gap_timer()

    def _send_chat(self, room_id: int, frames: list[bytes]) -> None:
        """Chat frames the room's sequencer released, in order, to this node's members."""
        if not frames:
            return
        members = self.engine.rooms.connections(room_id)
        self.metrics.messages_out["chat"] += len(members) * len(frames)
        for frame in frames:
            self.fanout.send_room(room_id, members, frame)

    def _apply_join(self, entry: log_entries.Joined) -> None:
        conn_id, room_id = entry.conn, entry.room
        if self.engine.user_of(conn_id) is None:  # closed before its join came round
            self._settle(conn_id)
            return
        conn = self._connections.get(conn_id)
        already = self.engine.is_member(conn_id, room_id)
        if conn is not None:
            self.sequencer.start(room_id, entry.seq_floor)
        self.fanout.membership_changed(room_id)
        self.publish(self.engine.join(conn_id, room_id))
        if conn is None:
            return
        if entry.since is None or already:
            self._settle(conn_id)
            return
        # The backlog goes out before anything newer: the room waits for it.
        self.sequencer.pause(room_id)
        self._spawn(self._send_backlog(conn, room_id, entry.since))

    async def _send_backlog(self, conn: Connection, room_id: int, since: int) -> None:
        """Read and send what the joiner missed, then let the room's live traffic go on."""
        through = self.sequencer.delivered(room_id)
        waiting = self._awaiting.get(conn.id)
        try:
            messages, truncated = await self.store.messages_since(
                room_id, since, through, self.settings.resume_max_messages
            )
            if not conn.ended and messages:
                if truncated:
                    first = messages[0].message.id
                    self.send(conn, HistoryGap(room_id=room_id, since=since, before=first))
                for item in messages:
                    self.send(conn, item.message)
        except Exception as exc:
            # Not joined without its backlog: the client is told and may retry.
            if waiting is not None and not waiting.done():
                waiting.set_exception(StoreUnavailable(str(exc)))
            if not conn.ended:
                self._append_request(conn, LeaveRoomRequest(room_id=room_id))
        finally:
            self._settle(conn.id)
            self._send_chat(room_id, self.sequencer.resume(room_id))

    def _apply_request(self, entry: log_entries.ClientRequest, mine: bool) -> None:
        conn_id = entry.conn
        request = decode_client(bytes(entry.data))
        try:
            if isinstance(request, PingRequest):
                # Answered in log order: the pong follows what was sent before the ping.
                if (conn := self._connections.get(conn_id)) is not None:
                    self.send(conn, Pong())
            elif isinstance(request, TypingRequest):
                self.publish(
                    self.engine.set_typing(conn_id, request.room_id, request.is_typing, entry.at)
                )
                self._arm_timer()
            elif isinstance(request, LeaveRoomRequest):
                rooms = (
                    list(self.engine.rooms.rooms_of(conn_id))
                    if request.room_id is None
                    else [request.room_id]
                )
                try:
                    deliveries = self.engine.leave(conn_id, request.room_id, entry.at)
                finally:
                    self._settle(conn_id)  # the leave is what this connection awaits
                for room_id in rooms:
                    self.fanout.membership_changed(room_id)
                self.publish(deliveries)
            elif isinstance(request, PresenceRequest):
                self.publish(self.engine.set_status(conn_id, request.status))
            elif isinstance(request, (WebRTCRequest, CallEndRequest, CallRejectRequest)):
                self._apply_call_request(conn_id, request, entry, mine)
        except ProtocolError as exc:
            conn = self._connections.get(conn_id)
            if conn is not None:
                self.reply_error(conn, exc)

    def _apply_node_gone(self, entry: log_entries.NodeGone, record: bool) -> None:
        if entry.node == self.node_id:
            # Declared dead while alive (a long pause): announce ourselves again.
            self._announce()
            return
        log.warning("node gone node=%s", entry.node)
        gone = sorted(c for c, node in self._node_of.items() if node == entry.node)
        for conn_id in gone:
            self._remove_connection(conn_id, entry.at, entry.wall, record)

    def _apply_snapshot(self, entry: log_entries.Snapshot, record: bool) -> None:
        """Make this replica's picture of ``entry.node`` what that node says it holds."""
        if entry.node == self.node_id:
            return
        if self._awaiting_snapshots is not None:
            self._awaiting_snapshots.discard(entry.node)
        listed = {state.conn: state for state in entry.connections}
        for conn_id in sorted(c for c, n in self._node_of.items() if n == entry.node):
            if conn_id not in listed:
                self._remove_connection(conn_id, entry.at, entry.wall, record)
        for state in entry.connections:
            try:
                self._reconcile(entry.node, state, entry.at)
            except Exception:  # one odd connection must not stop the rest
                log.exception("snapshot entry skipped node=%s conn=%s", entry.node, state.conn)
        # The node speaks for the calls its connections placed: one it does not
        # list is over (it ended there while this replica missed it).
        listed_calls = {call.id for call in entry.calls}
        for known in self.calls.calls():
            if known.id not in listed_calls and self._node_of.get(known.caller_conn) == entry.node:
                self._apply_calls(self.calls.drop(known.id, entry.wall), record)
        for call in entry.calls:
            fields = msgspec.structs.asdict(call)
            fields["ringing_conns"] = set(call.ringing_conns)
            fields["state"] = CallState.ACTIVE if call.callee_conn else CallState.RINGING
            self.calls.restore(Call(**fields))
        self._arm_timer()

    def _reconcile(self, node: str, state: log_entries.ConnectionState, at: float) -> None:
        """Make one connection of ``node`` what its node says it is."""
        engine = self.engine
        conn_id = state.conn
        self._add_connection(conn_id, node, None)
        if state.user is None:
            return
        if engine.user_of(conn_id) is None:
            engine.identify(conn_id, state.user)
        present = set(engine.rooms.rooms_of(conn_id))
        for room_id in sorted(set(state.rooms) - present):
            self.fanout.membership_changed(room_id)
            self.publish(engine.join(conn_id, room_id))
        for room_id in sorted(present - set(state.rooms)):
            self.fanout.membership_changed(room_id)
            self.publish(engine.leave(conn_id, room_id, at))
        # A status is the user's, not the connection's: a node speaks for it only
        # when it holds all of the user's connections (else newer entries win).
        if all(self._node_of.get(c) == node for c in engine.connections_of(state.user)):
            self.publish(engine.set_status(conn_id, state.status))
        for room_id in state.typing:
            if engine.is_member(conn_id, room_id):
                self.publish(engine.set_typing(conn_id, room_id, True, at))

    def _announce(self) -> None:
        """Append this node's snapshot once its own earlier entries are applied here.

        A snapshot taken while some of this node's entries are still on their
        way through the log would describe a state older than its position in
        the log: the replicas would apply those entries, then the snapshot,
        and undo them.
        """
        if self.broker.pending():
            self._announce_due = True
            return
        self._announce_due = False
        self._append(self.snapshot())

    def snapshot(self) -> log_entries.Snapshot:
        """What this node holds, for the other replicas."""
        engine = self.engine
        connections = []
        for conn_id in self._connections:
            user_id = engine.user_of(conn_id)
            rooms = tuple(sorted(engine.rooms.rooms_of(conn_id)))
            connections.append(
                log_entries.ConnectionState(
                    conn=conn_id,
                    user=user_id,
                    rooms=rooms,
                    status=engine.presence.status(user_id) if user_id else "online",
                    typing=engine.typing_rooms(conn_id),
                )
            )
        calls = tuple(
            msgspec.convert(call, log_entries.CallState, from_attributes=True)
            for call in self.calls.calls()
            if call.caller_conn in self._connections
        )
        return log_entries.Snapshot(
            self.node_id, tuple(connections), calls, self._now(), self._clock_ms()
        )

    def log_interrupted(self, unreadable: int = 0) -> None:
        """Log entries may have been lost (or were unreadable): re-announce, ask the
        others, re-read rooms."""
        self.metrics.log_unreadable_entries += unreadable
        log.warning(
            "log interrupted: resynchronising node=%s unreadable=%d", self.node_id, unreadable
        )
        self._append(log_entries.SnapshotRequest(self.node_id, recovering=True))
        self._catch_up_rooms()

    def _catch_up_rooms(self) -> None:
        """Read what this node's rooms may have missed from the database.

        After this node's log was interrupted, and when another node recovers
        from being cut off: that node kept storing its users' messages, applied
        only there, and the last of those would otherwise reach this node only
        with the room's next message. One pass at a time, a few rooms at once
        (every node does this at the same moment, against one database); a
        request during a pass makes one more pass follow.
        """
        if self._catching_up is not None:
            self._catch_up_again = True
            return
        self._catching_up = self._spawn(self._catch_up_passes())

    async def _catch_up_passes(self) -> None:
        try:
            while True:
                self._catch_up_again = False
                rooms = sorted(
                    {r for c in self._connections for r in self.engine.rooms.rooms_of(c)}
                )
                for start in range(0, len(rooms), _CATCH_UP_AT_ONCE):
                    batch = rooms[start : start + _CATCH_UP_AT_ONCE]
                    await asyncio.gather(*(self._catch_up(room_id) for room_id in batch))
                if not self._catch_up_again:
                    return
        finally:
            self._catching_up = None

    @property
    def ready(self) -> bool:
        """Whether this node's replica knows the cluster (every live node has sent
        its snapshot, or ``node_ttl`` passed): until then it would decide, say,
        that a callee on another node is unavailable."""
        if self._awaiting_snapshots is None:
            return self.broker.node_id == "local"
        return not self._awaiting_snapshots or self._now() >= self._ready_by

    def nodes_alive(self, live: set[str]) -> None:
        """The broker's list of live nodes: any other node not in it is gone.

        Missing from the list already means ``node_ttl`` without a refresh (the
        score expired), so it is declared gone at once: waiting here too would
        make that twice ``node_ttl``.
        """
        now = self._now()
        if self._awaiting_snapshots is None:  # the first list: whom to hear from
            self._awaiting_snapshots = live - {self.node_id}
            self._ready_by = now + self.settings.node_ttl
        for node in sorted(set(self._node_of.values()) - live - {self.node_id}):
            self._append(log_entries.NodeGone(node, now, self._clock_ms()))

    # -- gaps in a room's sequence ---------------------------------------------------------

    async def _catch_up(self, room_id: int) -> None:
        """Read what this node missed of a room, if anything (see _catch_up_rooms)."""
        try:
            room = await self.store.get_room(room_id)
        except Exception as exc:
            log.error("catch-up failed room=%s error=%r", room_id, exc)
            return
        if room is not None and room.last_seq > self.sequencer.delivered(room_id):
            await self._fill(room_id, self.sequencer.delivered(room_id), room.last_seq)

    def _has_local_members(self, room_id: int) -> bool:
        return any(c in self._connections for c in self.engine.rooms.connections(room_id))

    async def _fill(self, room_id: int, after: int, through: int) -> None:
        """Read a gap from the database; what arrives meanwhile waits (the room is paused)."""
        self.sequencer.pause(room_id)
        released: list[bytes] = []
        try:
            found: list[tuple[int, bytes]] = []
            if self._has_local_members(room_id):
                rows = await self.store.messages_in_seq_range(room_id, after, through)
                found = [(item.seq, self.frame(item.message)) for item in rows]
                self.metrics.gap_fills += 1
            released = self.sequencer.fill(room_id, found, through)
        except Exception as exc:
            log.error("gap fill failed room=%s error=%r", room_id, exc)
        finally:
            self._send_chat(room_id, released + self.sequencer.resume(room_id))
            self._arm_gap_timer()

    def _arm_gap_timer(self) -> None:
        deadline = self.sequencer.next_deadline()
        if deadline is None or self._gap_timer is not None:
            return
        delay = max(0.0, deadline - self._now())
        self._gap_timer = asyncio.get_running_loop().call_later(delay, self._gaps_due)

    def _gaps_due(self) -> None:
        self._gap_timer = None
        for gap in self.sequencer.overdue():
            self._spawn(self._fill(gap.room, gap.after, gap.through))
        self._arm_gap_timer()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- connection lifecycle -------------------------------------------------------------

    def open(
        self,
        remote: str,
        close: Callable[[int, str], Coroutine[Any, Any, None]],
        transport: Writable,
        user_id: str | None,
    ) -> Connection:
        conn = Connection(
            id=uuid.uuid4().hex,
            remote=remote,
            close=close,
            abort=transport.abort,
            gone=transport.is_closing,
            user_id=user_id,
            last_seen=asyncio.get_running_loop().time(),
        )
        self._connections[conn.id] = conn
        if user_id is not None:
            self._own_by_user.setdefault(user_id, set()).add(conn.id)
        self.fanout.add(conn.id, transport)
        self._append(log_entries.Opened(conn.id, self.node_id, user_id))
        log.info("connect conn=%s user=%s remote=%s", conn.id, user_id, remote)
        self.send(conn, Connected(connection_id=conn.id, user_id=user_id))
        return conn

    def closed(self, conn: Connection, reason: str) -> None:
        """The connection is gone: leave its rooms, end its typing, update presence."""
        if conn.closed:
            return
        conn.closed = True
        self._connections.pop(conn.id, None)
        if conn.user_id is not None:
            own = self._own_by_user.get(conn.user_id)
            if own is not None:
                own.discard(conn.id)
                if not own:
                    del self._own_by_user[conn.user_id]
        for room_id in self.engine.rooms.rooms_of(conn.id):
            self.fanout.membership_changed(room_id)
        self.fanout.remove(conn.id)
        self._append(log_entries.Closed(conn.id, self._now(), self._clock_ms()))
        self._settle(conn.id)
        if self.limiter is not None:
            self.limiter.forget_connection(conn.id)
        log.info("disconnect conn=%s user=%s reason=%s", conn.id, conn.user_id, reason)

    def _slow_consumer(self, conn_id: str) -> None:
        """A client that does not read: drop it at once, the room must not wait.

        It cannot read a close frame either, so the socket is aborted; the
        usual cleanup follows when the endpoint sees the connection end.
        """
        conn = self._connections.get(conn_id)
        if conn is None or conn.closed:
            return
        log.warning("slow consumer conn=%s user=%s", conn.id, conn.user_id)
        self.metrics.slow_consumer_disconnects += 1
        self.fanout.remove(conn.id)
        conn.abort()

    def stop_sending(self, conn: Connection) -> None:
        """Write what is queued for the connection, then nothing: its close frame follows."""
        conn.closing = True
        self.fanout.flush_connection(conn.id)
        self.fanout.remove(conn.id)

    def close_soon(self, conn: Connection, code: int, reason: str) -> None:
        """Close a connection after what is queued for it, without awaiting here.

        From this moment nothing more is sent to it or acted on from it.
        """
        self.stop_sending(conn)
        self._spawn(conn.close(code, reason))

    def connections(self) -> list[Connection]:
        return list(self._connections.values())

    def connection_count(self, user_id: str) -> int:
        """The user's open connections in the cluster: those of the replica, and this
        node's own at once (the replica learns of a new one only from the log)."""
        return len(set(self.engine.connections_of(user_id)) | self._own_by_user.get(user_id, set()))

    # -- requests ----------------------------------------------------------------------

    async def receive(self, conn: Connection, data: bytes | str) -> None:
        """Handle one client frame; every failure becomes an ``error`` frame."""
        pending = self.receive_now(conn, data)
        if pending is not None:
            await pending

    def receive_now(self, conn: Connection, data: bytes | str) -> Coroutine[Any, Any, None] | None:
        """Handle one client frame as far as possible without waiting.

        ``join_room`` needs a database read and ``join_room``/``leave_room``
        wait until the log has applied them; those are returned as a
        coroutine, which the caller must finish before it hands this
        connection's next frame in.
        """
        if conn.closing:
            return None
        request_type: str | None = None
        request: Request | None = None
        try:
            request = decode_client(data)
        except ProtocolError as exc:
            self._refuse_garbage(conn, exc)
            return None
        try:
            request_type = request.TYPE
            self.metrics.messages_in[request_type] += 1
            self._limit(conn, CLASS_OF_TYPE.get(request_type, MessageClass.OTHER), request_type)
            self._check_identity(conn, request)
            if type(request) is ChatRequest:  # the hot path first
                self._chat(conn, request)
            elif type(request) is JoinRoomRequest:
                return self._guarded(conn, request, self._join(conn, request))
            else:
                return self._dispatch(conn, request)
        except Exception as exc:
            self._fail(conn, request, request_type, exc)
        return None

    def receive_binary(self, conn: Connection) -> None:
        """A binary frame: refused like any frame that is not a request."""
        if not conn.closing:
            error = ProtocolError(ErrorCode.INVALID_MESSAGE, "frames must be JSON text, not binary")
            self._refuse_garbage(conn, error)

    def control_frame(self, conn: Connection) -> bool:
        """A WebSocket ping or pong: charged to the connection's control budget.

        False when it is over budget (a ping is then not answered); the refusal
        is a strike like any other, so a connection that floods them is cut.
        """
        try:
            self._limit(conn, MessageClass.CONTROL, None)
        except ProtocolError:
            return False
        return True

    def _refuse_garbage(self, conn: Connection, error: ProtocolError) -> None:
        """A frame that is no request: counted, charged to the rate limits (garbage
        counts too), and answered with its error, or with the limiter's refusal."""
        self.metrics.messages_in["invalid"] += 1
        try:
            self._limit(conn, MessageClass.OTHER, error.type)
        except ProtocolError as refused:
            error = refused
        self.reply_error(conn, error)

    async def _guarded(
        self, conn: Connection, request: Request, work: Coroutine[Any, Any, None]
    ) -> None:
        try:
            await work
        except Exception as exc:
            self._fail(conn, request, request.TYPE, exc)

    def _fail(
        self,
        conn: Connection,
        request: Request | None,
        request_type: str | None,
        exc: Exception,
    ) -> None:
        """Answer a failed request with its error; internal failures are logged, not shown."""
        if isinstance(exc, ProtocolError):
            error = exc
        elif isinstance(exc, StoreUnavailable):
            log.error("store unavailable conn=%s type=%s error=%s", conn.id, request_type, exc)
            error = ProtocolError(ErrorCode.INTERNAL, "storage is unavailable", request_type)
        else:
            log.error("internal error conn=%s type=%s", conn.id, request_type, exc_info=exc)
            error = ProtocolError(ErrorCode.INTERNAL, "internal server error", request_type)
        if isinstance(request, ChatRequest):
            error.client_msg_id = request.client_msg_id  # so the sender knows which one
        self.reply_error(conn, error)

    def _limit(self, conn: Connection, cls: MessageClass, request_type: str | None) -> None:
        """Take a token for this message, or refuse it (and cut a flooding client)."""
        if self.limiter is None:
            return
        now = self._now()
        wait = self.limiter.check(conn.id, conn.user_id, cls, now)
        if not wait:
            return
        self.metrics.rate_limited[cls] += 1
        if self.limiter.strike(conn.id, now):
            self.metrics.flood_disconnects += 1
            log.warning("flood conn=%s user=%s class=%s", conn.id, conn.user_id, cls)
            self.close_soon(conn, CLOSE_POLICY_VIOLATION, "flooding")
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            f"too many {cls} messages; slow down",
            request_type,
            retry_after_ms=math.ceil(wait * 1000),
        )

    def reply_error(self, conn: Connection, exc: ProtocolError) -> None:
        if conn.closing or conn.closed:
            return
        log.info("error conn=%s user=%s code=%s type=%s", conn.id, conn.user_id, exc.code, exc.type)
        self.metrics.errors[exc.code] += 1
        self.send(conn, error_event(exc))

    def _check_identity(self, conn: Connection, request: Request) -> None:
        claimed = request.claimed_users()
        if conn.user_id is None:
            if claimed and self.settings.open_mode and len(set(claimed)) == 1:
                most = self.settings.max_connections_per_user
                if self.connection_count(claimed[0]) >= most:
                    refusal = ProtocolError(
                        ErrorCode.RATE_LIMITED, "too many connections for this user", request.TYPE
                    )
                    self.send(conn, error_event(refusal))  # the error first, then the close
                    self.close_soon(conn, CLOSE_POLICY_VIOLATION, "too many connections")
                    raise refusal
                conn.user_id = claimed[0]
                self._own_by_user.setdefault(conn.user_id, set()).add(conn.id)
                self._append(log_entries.Identified(conn.id, claimed[0]))
                log.info("identify conn=%s user=%s", conn.id, claimed[0])
            elif claimed and self.settings.open_mode:
                raise ProtocolError(
                    ErrorCode.FORBIDDEN,
                    "payload.user_id and payload.from_user_id name different users",
                    request.TYPE,
                )
            elif not isinstance(request, PingRequest):
                raise ProtocolError(
                    ErrorCode.UNAUTHENTICATED,
                    "no user is known for this connection: connect with ?user_id= or name user_id",
                    request.TYPE,
                )
        for name in claimed:
            if name != conn.user_id:
                raise ProtocolError(
                    ErrorCode.FORBIDDEN,
                    f"this connection belongs to user {conn.user_id!r}, not {name!r}",
                    request.TYPE,
                )

    def _dispatch(self, conn: Connection, request: Request) -> Coroutine[Any, Any, None] | None:
        """Requests other than chat and join_room, on the node that received them."""
        if isinstance(request, PingRequest) and self.broker.pending() == 0:
            # Nothing of this node's is on its way through the log: answer now.
            self.send(conn, Pong())
            return None
        if isinstance(request, (MessageEditRequest, MessageDeleteRequest, MessageReactionRequest)):
            self._message_op(conn, request)
            return None
        new_id = ""
        if isinstance(request, WebRTCRequest):
            limit = self.settings.max_signal_bytes
            if len(request.data) > limit:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE, f"payload.data: larger than {limit} bytes", request.TYPE
                )
            if len(request.media) > MAX_MEDIA_BYTES:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE,
                    f"payload.media: larger than {MAX_MEDIA_BYTES} bytes",
                    request.TYPE,
                )
            if request.type == "offer" and request.call_id is None:
                new_id = uuid.uuid4().hex
        elif not isinstance(request, _LOGGED_REQUESTS):  # pragma: no cover
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "unhandled type", request.TYPE)
        # Leaving waits for the log, so that the next request sees the room left.
        waiting = self._expect(conn) if isinstance(request, LeaveRoomRequest) else None
        if isinstance(request, TypingRequest):  # cheap to refuse here, before the log
            self.engine.require_member(conn.id, request.room_id, request.TYPE)
        self._append_request(conn, request, new_id)
        if waiting is None or waiting.done():
            return None
        return self._guarded(conn, request, self._settled(waiting))

    def _append_request(self, conn: Connection, request: Request, new_id: str = "") -> None:
        """Put a request of this connection in the log, for every replica to apply.

        Re-encoded: only the request's own fields travel, whatever the client padded.
        """
        data = msgspec.Raw(encode_request(request))
        self._append(
            log_entries.ClientRequest(conn.id, data, self._now(), self._clock_ms(), new_id)
        )

    def _expect(self, conn: Connection) -> asyncio.Future[None]:
        """A future settled when this connection's next awaited entry is applied."""
        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._awaiting[conn.id] = waiting
        return waiting

    async def _settled(self, waiting: asyncio.Future[None]) -> None:
        """Wait for the log to apply a join or leave; bounded, so a lost entry
        cannot keep a connection's handler (and its cleanup) waiting forever."""
        try:
            await asyncio.wait_for(asyncio.shield(waiting), self.settings.log_timeout)
        except TimeoutError:
            raise StoreUnavailable("the cluster's log did not apply the request in time") from None

    async def _join(self, conn: Connection, request: JoinRoomRequest) -> None:
        user_id = conn.user_id
        assert user_id is not None
        rooms = self.engine.rooms.rooms_of(conn.id)
        if request.room_id not in rooms and len(rooms) >= self.settings.max_rooms_per_connection:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"a connection can be in at most {self.settings.max_rooms_per_connection} rooms",
                request.TYPE,
            )
        room = await self._room_for(request.room_id, user_id, conn.remote)
        if not room.admits(user_id):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"room {room.id} is private", request.TYPE)
        if conn.ended:  # it went away while the room was looked up
            return
        # Applied at one point of the log: this node's connections have had every
        # message of the room up to that point, and the joiner gets every later
        # one; with "since" the backlog up to that point is read before them.
        waiting = self._expect(conn)
        self._append(log_entries.Joined(conn.id, room.id, room.last_seq, request.since))
        await self._settled(waiting)

    async def _room_for(self, room_id: int, user_id: str, address: str) -> Room:
        room = await self.store.get_room(room_id)
        if room is not None:
            return room
        if not self.settings.open_mode:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"room {room_id} does not exist", "join_room")
        # Joining an unknown id creates it, as limited as creating one over HTTP.
        # The tokens are taken only by the joiner that did create it: everyone
        # re-joining at once after a restart has read "no such room" before the
        # first of them created it.
        wait = self._room_creation_wait(user_id, address)
        if wait:
            room = await self.store.get_room(room_id)  # created meanwhile?
            if room is not None:
                return room
            self._refuse_room_creation(wait, "join_room")
        now = self._clock_ms()
        try:
            room = await self.store.ensure_room(
                room_id, user_id, now, self.settings.max_rooms_per_user
            )
        except RoomLimitReached as exc:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"room {room_id} does not exist, and you have created {exc.limit} rooms, "
                "the most a user may",
                "join_room",
            ) from None
        if self.creation_limiter is not None and (room.created_by, room.created_at) == (
            user_id,
            now,
        ):
            self.creation_limiter.take(user_id, address, self._now())
        return room

    async def create_room(self, user_id: str, address: str, body: CreateRoom) -> Room:
        """``POST /api/rooms``: a new room, within the user's rate and number of rooms."""
        self._limit_room_creation(user_id, address, None)
        members = tuple(dict.fromkeys([user_id, *body.members])) if body.private else ()
        try:
            return await self.store.create_room(
                body.name,
                body.private,
                members,
                user_id,
                self._clock_ms(),
                self.settings.max_rooms_per_user,
            )
        except RoomLimitReached as exc:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"you have created {exc.limit} rooms, the most a user may"
            ) from None

    def _limit_room_creation(self, user_id: str, address: str, request_type: str | None) -> None:
        """Take the room-creation tokens of the user and its address, or refuse
        with ``rate_limited``.

        Per node (the number of rooms, which the store counts, is what holds
        across a cluster).
        """
        wait = self._room_creation_wait(user_id, address)
        if wait:
            self._refuse_room_creation(wait, request_type)
        if self.creation_limiter is not None:
            self.creation_limiter.take(user_id, address, self._now())

    def _room_creation_wait(self, user_id: str, address: str) -> float:
        """Seconds until the user may create a room from ``address`` (0: now)."""
        if self.creation_limiter is None:
            return 0.0
        return self.creation_limiter.wait(user_id, address, self._now())

    def _refuse_room_creation(self, wait: float, request_type: str | None) -> NoReturn:
        self.metrics.rate_limited[MessageClass.ROOMS] += 1
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            "too many rooms created; slow down",
            request_type,
            retry_after_ms=math.ceil(wait * 1000),
        )

    def _content(self, request: ChatRequest | MessageEditRequest) -> str:
        # Control characters (but newline and tab) are dropped: they can only
        # confuse the terminals, logs and renderers that show the text later.
        content = request.content
        if not content.isprintable():  # rare: only then look for what to remove
            content = _CONTROL_CHARACTERS.sub("", content.replace("\r\n", "\n"))
        if not content.strip():
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, "payload.content: must not be empty", request.TYPE
            )
        if len(content) > self.settings.max_content_chars:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"payload.content: longer than {self.settings.max_content_chars} characters",
                request.TYPE,
            )
        return content

    def _chat(self, conn: Connection, request: ChatRequest) -> None:
        user_id = self.engine.require_member(conn.id, request.room_id, request.TYPE)
        op = InsertMessage(
            room_id=request.room_id,
            user_id=user_id,
            content=self._content(request),
            kind=request.type,
            created_at=self._clock_ms(),
            client_msg_id=request.client_msg_id,
        )
        self._submit(conn, op, request.TYPE)

    def _message_op(
        self,
        conn: Connection,
        request: MessageEditRequest | MessageDeleteRequest | MessageReactionRequest,
    ) -> None:
        user_id = conn.user_id
        assert user_id is not None
        rooms = frozenset(self.engine.rooms.rooms_of(conn.id))
        now = self._clock_ms()
        op: Operation
        if isinstance(request, MessageEditRequest):
            op = EditMessage(request.message_id, user_id, rooms, self._content(request), now)
        elif isinstance(request, MessageDeleteRequest):
            op = DeleteMessage(request.message_id, user_id, rooms, now)
        else:
            emoji = unicodedata.normalize("NFC", request.emoji)
            op = ToggleReaction(request.message_id, user_id, rooms, emoji, now)
        self._submit(conn, op, request.TYPE)

    async def writes_work(self) -> bool:
        """Commit a :class:`ProbeWrite`: whether write transactions succeed now.

        For ``/health`` after commits failed, so that it can tell a recovered
        database without waiting for a user to write. One probe at a time;
        callers meanwhile share its answer.
        """
        probe = self._write_probe
        if probe is None or probe.done():
            probe = self._write_probe = asyncio.get_running_loop().create_future()

            def settle(result: Result | None, error: BaseException | None) -> None:
                if not probe.done():
                    probe.set_result(error is None)

            try:
                self._store_submit(ProbeWrite(self._clock_ms()), settle)
            except StoreUnavailable:
                probe.set_result(False)
        try:
            return await asyncio.wait_for(asyncio.shield(probe), self.settings.db_timeout + 1)
        except TimeoutError:
            return False

    def _store_submit(self, op: Operation, done: Done[Result]) -> None:
        try:
            self.store.submit(op, done)
        except RuntimeError:
            raise StoreUnavailable("the store is shutting down") from None

    def _submit(self, conn: Connection, op: Operation, request_type: str) -> None:
        self._store_submit(
            op, lambda result, error: self._committed(conn, op, request_type, result, error)
        )

    def _committed(
        self,
        conn: Connection,
        op: Operation,
        request_type: str,
        result: Result | None,
        exc: BaseException | None,
    ) -> None:
        """A group commit finished: publish what it did, or tell the sender why not."""
        client_msg_id = op.client_msg_id if isinstance(op, InsertMessage) else None
        if exc is not None or result is None:
            code, text = ErrorCode.INTERNAL, "the message could not be stored"
        elif result.outcome is not Outcome.DONE:
            code, text = _REFUSALS[result.outcome]
            text = text.format(id=result.message_id)
        else:
            code = None
        if code is not None:
            self.reply_error(
                conn, ProtocolError(code, text, request_type, client_msg_id=client_msg_id)
            )
            return
        assert result is not None
        if result.duplicate_of is not None:
            # A retry of a stored message: the sender gets it again, nobody else does.
            self.send(conn, result.duplicate_of)
            return
        self._append(self._entry_for(op, result))

    def _entry_for(self, op: Operation, result: Result) -> Input:
        """The log entry that announces a committed operation."""
        room_id, message_id = result.room_id, result.message_id
        if isinstance(op, InsertMessage):
            message = ChatMessage(
                id=message_id,
                room_id=room_id,
                user_id=op.user_id,
                content=op.content,
                type="text",
                created_at=op.created_at,
                client_msg_id=op.client_msg_id,
            )
            return log_entries.MessageStored(message, result.seq)
        event: Event
        if isinstance(op, EditMessage):
            event = MessageEdited(
                message_id=message_id, room_id=room_id, content=op.content, edited_at=op.edited_at
            )
        elif isinstance(op, DeleteMessage):
            event = MessageDeleted(message_id=message_id, room_id=room_id)
        elif isinstance(op, ToggleReaction):
            event = MessageReaction(
                message_id=message_id,
                room_id=room_id,
                user_id=op.user_id,
                emoji=op.emoji,
                action="added" if result.added else "removed",
            )
        else:  # pragma: no cover - call records and reads are not submitted from here
            raise TypeError(f"no announcement for {type(op).__name__}")
        return log_entries.RoomFrame(room_id, msgspec.Raw(encode(event, self._clock_ms())))

    # -- calls -------------------------------------------------------------------------

    def _apply_call_request(
        self,
        conn_id: str,
        request: WebRTCRequest | CallEndRequest | CallRejectRequest,
        entry: log_entries.ClientRequest,
        record: bool,
    ) -> None:
        user_id = self.engine.user_of(conn_id)
        if user_id is None:  # closed before its request came round
            return
        wall = entry.wall
        calls = self.calls
        if isinstance(request, CallEndRequest):
            call = calls.find(request.call_id, user_id, None, request.TYPE)
            effects = calls.hang_up(conn_id, user_id, call, wall)
        elif isinstance(request, CallRejectRequest):
            call = calls.find(request.call_id, user_id, None, request.TYPE)
            effects = calls.reject(conn_id, user_id, call, wall)
        elif request.type == "offer" and request.call_id is None:
            effects = calls.offer(
                conn_id,
                user_id,
                request.to_user_id,
                request.data,
                request.media,
                entry.at,
                wall,
                call_id=entry.new_id,
            )
        else:
            call = calls.find(request.call_id, user_id, request.to_user_id, request.TYPE)
            effects = calls.signal(conn_id, user_id, request.type, call, request.data, wall)
        self._apply_calls(effects, record)

    def _apply_calls(self, effects: list[CallEffect], record: bool) -> None:
        """Send what calls decided; the node whose entry it was stores the records."""
        deliveries: list[Delivery] = []
        for effect in effects:
            if isinstance(effect, CallRecord):
                if record:
                    self._save_call(effect)
            else:
                deliveries.append(effect)
        self.publish(deliveries)
        self._arm_timer()

    def _save_call(self, record: CallRecord) -> None:
        """Calls are logged in the background: signaling never waits for the disk."""
        try:
            self.store.submit(record, _log_unsaved_call)
        except RuntimeError:
            log.error("call not recorded, store closed call=%s", record.call_id)

    # -- timers ----------------------------------------------------------------------

    @staticmethod
    def _now() -> float:
        """Seconds on the wall clock: times in log entries must mean the same on every node."""
        return time.time()

    def _arm_timer(self) -> None:
        """One timer for the nearest deadline: typing auto-stop or a call's ringing."""
        deadlines = [
            d for d in (self.engine.next_deadline(), self.calls.next_deadline()) if d is not None
        ]
        if not deadlines:
            return
        deadline = min(deadlines)
        if deadline <= self._tick_sent:
            return  # this node's tick for it is on its way through the log
        if self._timer is not None and self._timer_deadline <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        # At least a few milliseconds apart, so that a deadline set by a node whose
        # clock runs ahead cannot make this one tick in a busy loop.
        delay = max(deadline - self._now(), 0.005)
        self._timer = asyncio.get_running_loop().call_later(delay, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._timer = None
        self._timer_deadline = math.inf
        now = self._now()
        self._tick_sent = now
        # Applying the tick re-arms the timer for what is left.
        self._append(log_entries.Tick(now, self._clock_ms()))


def _log_unsaved_call(result: Result | None, error: BaseException | None) -> None:
    if error is not None:
        log.error("call not recorded error=%r", error)
