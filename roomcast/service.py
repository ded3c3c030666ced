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
from typing import Any

from roomcast.config import Settings
from roomcast.core.calls import CallEffect, CallRecord, CallRegistry
from roomcast.core.deliveries import Delivery, ToConnections, ToRoom
from roomcast.core.engine import ChatEngine
from roomcast.core.limits import CLASS_OF_TYPE, MessageClass, RateLimiter, parse_rates
from roomcast.metrics import Metrics
from roomcast.ports.broker import Broker
from roomcast.ports.group_commit import Done
from roomcast.ports.store import (
    DeleteMessage,
    EditMessage,
    InsertMessage,
    Operation,
    Outcome,
    ReadSince,
    Result,
    Room,
    Store,
    StoreUnavailable,
    ToggleReaction,
)
from roomcast.protocol import (
    CallEndRequest,
    CallRejectRequest,
    ChatMessage,
    ChatRequest,
    Connected,
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
    error_event,
)
from roomcast.transport.fanout import FanOut, Writable, text_frame

log = logging.getLogger("roomcast.service")

#: WebSocket close code for policy violations (floods, slow consumers).
CLOSE_POLICY_VIOLATION = 1008


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False)
class Connection:
    """One WebSocket connection, as the service sees it."""

    id: str
    remote: str
    close: Callable[[int, str], Coroutine[Any, Any, None]]
    abort: Callable[[], None]
    # True once the socket is closing; checked after awaits, since the
    # connection's cleanup only runs when its handler returns.
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
        self.engine = ChatEngine(settings.typing_timeout)
        self.calls = CallRegistry(
            self.engine,
            new_id=lambda: uuid.uuid4().hex,
            ring_timeout=settings.ring_timeout,
            require_shared_room=not settings.allow_calls_outside_rooms,
        )
        self._clock_ms = clock_ms
        self._connections: dict[str, Connection] = {}
        self._timer: asyncio.TimerHandle | None = None
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

    # -- frame sink (what the broker delivers to this node) ---------------------------

    def deliver_room(self, room_id: int, frame: bytes, except_user: str | None) -> None:
        members = self.engine.rooms.connections(room_id)
        if except_user is None:
            self.fanout.send_room(room_id, members, frame)
        else:
            skip = set(self.engine.connections_of(except_user))
            self.fanout.send([c for c in members if c not in skip], frame)

    def deliver_connections(self, conn_ids: tuple[str, ...], frame: bytes) -> None:
        self.fanout.send(conn_ids, frame)

    # -- publishing ----------------------------------------------------------------------

    def frame(self, event: Event) -> bytes:
        return text_frame(encode(event, self._clock_ms()))

    def send(self, conn: Connection, event: Event) -> None:
        self.fanout.send((conn.id,), self.frame(event))

    def publish(self, deliveries: list[Delivery]) -> None:
        out = self.metrics.messages_out
        for delivery in deliveries:
            frame = self.frame(delivery.event)
            if isinstance(delivery, ToRoom):
                recipients = len(self.engine.rooms.connections(delivery.room_id))
                self.metrics.fanout.observe(recipients)
                out[delivery.event.TYPE] += recipients
                self.broker.publish_room(delivery.room_id, frame, delivery.except_user)
            elif isinstance(delivery, ToConnections):
                out[delivery.event.TYPE] += len(delivery.conn_ids)
                self.broker.publish_connections(delivery.conn_ids, frame)

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
        self.fanout.add(conn.id, transport)
        self.engine.open(conn.id, user_id)
        log.info("connect conn=%s user=%s remote=%s", conn.id, user_id, remote)
        self.send(conn, Connected(connection_id=conn.id, user_id=user_id))
        return conn

    def closed(self, conn: Connection, reason: str) -> None:
        """The connection is gone: leave its rooms, end its typing, update presence."""
        if conn.closed:
            return
        conn.closed = True
        self._connections.pop(conn.id, None)
        for room_id in self.engine.rooms.rooms_of(conn.id):
            self.fanout.membership_changed(room_id)
        self.fanout.remove(conn.id)
        self._apply_calls(self.calls.disconnected(conn.id, self._clock_ms()))
        self.publish(self.engine.close(conn.id, self._now()))
        if self.limiter is not None:
            self.limiter.forget_connection(conn.id)
            if conn.user_id is not None and not self.engine.presence.is_online(conn.user_id):
                self.limiter.forget_user(conn.user_id)
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
        task = asyncio.get_running_loop().create_task(conn.close(code, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def connections(self) -> list[Connection]:
        return list(self._connections.values())

    # -- requests ----------------------------------------------------------------------

    async def receive(self, conn: Connection, data: bytes | str) -> None:
        """Handle one client frame; every failure becomes an ``error`` frame."""
        pending = self.receive_now(conn, data)
        if pending is not None:
            await pending

    def receive_now(self, conn: Connection, data: bytes | str) -> Coroutine[Any, Any, None] | None:
        """Handle one client frame as far as possible without waiting.

        Everything but ``join_room`` is handled right here; a join needs a
        database read and is returned as a coroutine, which the caller must
        finish before it hands this connection's next frame in.
        """
        if conn.closing:
            return None
        request_type: str | None = None
        request: Request | None = None
        try:
            try:
                request = decode_client(data)
            except ProtocolError as exc:
                self.metrics.messages_in["invalid"] += 1
                self._limit(conn, MessageClass.OTHER, exc.type)  # garbage counts too
                raise
            request_type = request.TYPE
            self.metrics.messages_in[request_type] += 1
            self._limit(conn, CLASS_OF_TYPE.get(request_type, MessageClass.OTHER), request_type)
            self._check_identity(conn, request)
            if type(request) is ChatRequest:  # the hot path first
                self._chat(conn, request)
            elif type(request) is JoinRoomRequest:
                return self._join_guarded(conn, request)
            else:
                self._dispatch(conn, request)
        except Exception as exc:
            self._fail(conn, request, request_type, exc)
        return None

    async def _join_guarded(self, conn: Connection, request: JoinRoomRequest) -> None:
        try:
            await self._join(conn, request)
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
                if len(self.engine.connections_of(claimed[0])) >= most:
                    refusal = ProtocolError(
                        ErrorCode.RATE_LIMITED, "too many connections for this user", request.TYPE
                    )
                    self.send(conn, error_event(refusal))  # the error first, then the close
                    self.close_soon(conn, CLOSE_POLICY_VIOLATION, "too many connections")
                    raise refusal
                conn.user_id = claimed[0]
                self.engine.identify(conn.id, claimed[0])
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

    def _dispatch(self, conn: Connection, request: Request) -> None:
        """Requests that need no awaiting (chat and join_room are handled before)."""
        if isinstance(request, PingRequest):
            self.send(conn, Pong())
        elif isinstance(request, TypingRequest):
            self.publish(
                self.engine.set_typing(conn.id, request.room_id, request.is_typing, self._now())
            )
            self._arm_timer()
        elif isinstance(request, LeaveRoomRequest):
            rooms = (
                list(self.engine.rooms.rooms_of(conn.id))
                if request.room_id is None
                else [request.room_id]
            )
            deliveries = self.engine.leave(conn.id, request.room_id, self._now())
            for room_id in rooms:
                self.fanout.membership_changed(room_id)
            self.publish(deliveries)
        elif isinstance(request, PresenceRequest):
            self.publish(self.engine.set_status(conn.id, request.status))
        elif isinstance(
            request, (MessageEditRequest, MessageDeleteRequest, MessageReactionRequest)
        ):
            self._message_op(conn, request)
        elif isinstance(request, (WebRTCRequest, CallEndRequest, CallRejectRequest)):
            self._call_request(conn, request)
        else:  # pragma: no cover - decode_client only returns the types above
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "unhandled type", request.TYPE)

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
        room = await self._room_for(request.room_id, user_id)
        if not room.admits(user_id):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"room {room.id} is private", request.TYPE)
        if conn.ended:  # it went away while the room was looked up
            return
        if request.since is None or self.engine.is_member(conn.id, room.id):
            # Already in the room: it has every message since; room_users again.
            self.fanout.membership_changed(room.id)
            self.publish(self.engine.join(conn.id, room.id))
            return
        # The join and the backlog read happen at one point of the commit order:
        # the read sees every message broadcast before that point, and the
        # connection is a member for every message broadcast after it.
        since = request.since
        joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def join_at_this_point(backlog: Result | None, error: BaseException | None) -> None:
            if error is not None or backlog is None:
                joined.set_exception(StoreUnavailable(str(error)))
                return
            joined.set_result(None)
            if conn.ended:
                return
            self.fanout.membership_changed(room.id)
            self.publish(self.engine.join(conn.id, room.id))
            if backlog.truncated:
                gap = HistoryGap(room_id=room.id, since=since, before=backlog.messages[0].id)
                self.send(conn, gap)
            for message in backlog.messages:
                self.send(conn, message)

        self._store_submit(
            ReadSince(room.id, since, self.settings.resume_max_messages), join_at_this_point
        )
        await joined  # this connection's next request waits for the join

    async def _room_for(self, room_id: int, user_id: str) -> Room:
        room = await self.store.get_room(room_id)
        if room is not None:
            return room
        if not self.settings.open_mode:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"room {room_id} does not exist", "join_room")
        return await self.store.ensure_room(room_id, user_id, self._clock_ms())

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
        self.publish(self._events_for(op, result))

    def _events_for(self, op: Operation, result: Result) -> list[Delivery]:
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
            return self.engine.message_stored(message)
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
        else:  # pragma: no cover - call records are not submitted from here
            return []
        return [ToRoom(room_id, event)]

    # -- calls -------------------------------------------------------------------------

    def _call_request(
        self, conn: Connection, request: WebRTCRequest | CallEndRequest | CallRejectRequest
    ) -> None:
        user_id = conn.user_id
        assert user_id is not None
        wall = self._clock_ms()
        calls = self.calls
        if isinstance(request, CallEndRequest):
            call = calls.find(request.call_id, user_id, None, request.TYPE)
            self._apply_calls(calls.hang_up(conn.id, user_id, call, wall))
            return
        if isinstance(request, CallRejectRequest):
            call = calls.find(request.call_id, user_id, None, request.TYPE)
            self._apply_calls(calls.reject(conn.id, user_id, call, wall))
            return
        limit = self.settings.max_signal_bytes
        if len(request.data) > limit or len(request.media) > 1024:
            raise ProtocolError(
                ErrorCode.TOO_LARGE, f"payload.data: larger than {limit} bytes", request.TYPE
            )
        if request.type == "offer" and request.call_id is None:
            effects = calls.offer(
                conn.id,
                user_id,
                request.to_user_id,
                request.data,
                request.media,
                self._now(),
                wall,
            )
        else:
            call = calls.find(request.call_id, user_id, request.to_user_id, request.TYPE)
            effects = calls.signal(conn.id, user_id, request.type, call, request.data, wall)
        self._apply_calls(effects)

    def _apply_calls(self, effects: list[CallEffect]) -> None:
        deliveries: list[Delivery] = []
        for effect in effects:
            if isinstance(effect, CallRecord):
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

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _arm_timer(self) -> None:
        """One timer for the nearest deadline: typing auto-stop or a call's ringing."""
        deadlines = [
            d for d in (self.engine.next_deadline(), self.calls.next_deadline()) if d is not None
        ]
        if not deadlines:
            return
        deadline = min(deadlines)
        timer = self._timer
        if timer is not None and not timer.cancelled() and timer.when() <= deadline:
            return
        if timer is not None:
            timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(deadline, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._timer = None
        now = self._now()
        self._apply_calls(self.calls.expire(now, self._clock_ms()))  # re-arms the timer
        self.publish(self.engine.expire(now))
        self._arm_timer()


def _log_unsaved_call(result: Result | None, error: BaseException | None) -> None:
    if error is not None:
        log.error("call not recorded error=%r", error)
