"""The ``/ws`` endpoint: roomcast's own WebSocket connections, beside aiohttp's HTTP.

Every accepted TCP connection starts in a
:class:`~roomcast.transport.front_door.FrontDoor`. A valid WebSocket upgrade
of ``/ws`` is answered here and the connection becomes a
:class:`WebSocketConnection`; anything else is served by aiohttp's HTTP
protocol behind the front door. One port serves both.

Why not aiohttp's WebSocket: it delivers each frame to a task per
connection, so every message costs a task switch and a loop turn before
the node sees it, and each connection keeps aiohttp's request, response,
parser and handler task alive (about 16 KiB). Here frames are parsed in
``data_received`` (:mod:`roomcast.transport.frames`) and handed straight to
the node; outgoing frames go through the corked fan-out
(:mod:`roomcast.transport.fanout`), which writes to the transport itself.

A request the node must wait for (``join_room`` reads the database)
pauses reading from that connection until it is done, so each
connection's requests are still handled one after the other, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

from aiohttp import web

from roomcast.auth import Authenticator, AuthError
from roomcast.clock import wall_ms
from roomcast.config import Settings
from roomcast.node.connections import LocalConnection
from roomcast.node.node import Node
from roomcast.protocol import Error, ErrorCode, encode
from roomcast.transport.admission import Admission, Refusal
from roomcast.transport.fanout import FanOut
from roomcast.transport.frames import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    OPCODE_PING,
    OPCODE_PONG,
    Binary,
    Close,
    Event,
    FrameReader,
    Ping,
    Pong,
    Text,
    Violation,
    close_frame,
    control_frame,
    text_frame,
)
from roomcast.transport.handshake import Upgrade, switching_protocols

log = logging.getLogger("roomcast.websocket")

#: Seconds the client has to answer our close frame before the socket is dropped.
CLOSE_TIMEOUT = 5.0

#: Frames read while waiting for the client's close frame before the socket is
#: dropped: a client that keeps streaming after we closed costs bounded work.
MAX_FRAMES_WHILE_CLOSING = 1024


class WebSocketEndpoint:
    """Accepts WebSocket connections and keeps the per-user limit on them."""

    def __init__(
        self,
        node: Node,
        fanout: FanOut,
        auth: Authenticator,
        settings: Settings,
        admission: Admission,
    ) -> None:
        self.node = node
        self.fanout = fanout
        self.auth = auth
        self.settings = settings
        self.admission = admission
        self.sockets: set[WebSocketConnection] = set()

    def accept(
        self, transport: asyncio.Transport, upgrade: Upgrade, rest: bytes, remote: str
    ) -> None:
        """Complete the handshake and make the connection a WebSocket; it holds
        the connection's place in the admission count until it closes."""
        transport.write(switching_protocols(upgrade.key))
        connection = WebSocketConnection(self, transport, remote)
        self.sockets.add(connection)
        transport.set_protocol(connection)
        connection.start(upgrade.query)
        if rest:
            connection.data_received(rest)

    @staticmethod
    def refuse(transport: asyncio.Transport, upgrade: Upgrade, refusal: Refusal) -> None:
        """Complete the handshake only to say why the connection cannot stay."""
        transport.write(
            switching_protocols(upgrade.key)
            + text_frame(
                encode(Error(code=ErrorCode.RATE_LIMITED, message=refusal.reason), wall_ms())
            )
            + close_frame(refusal.close_code, ErrorCode.RATE_LIMITED)
        )
        transport.close()

    async def late_upgrade(self, request: web.Request) -> web.Response:
        """``GET /ws`` that reached aiohttp: no valid upgrade, or not the first request."""
        version = request.headers.get("Sec-WebSocket-Version")
        if version is not None and version.strip() != "13":
            # RFC 6455 section 4.4: say which version this server speaks.
            raise web.HTTPUpgradeRequired(
                headers={"Sec-WebSocket-Version": "13"},
                text=f"WebSocket version {version} is not supported; use 13",
            )
        raise web.HTTPBadRequest(
            text="GET /ws takes a WebSocket upgrade (RFC 6455, version 13) "
            "as the first request on its connection"
        )

    def user_over_limit(self, user_id: str | None) -> bool:
        """Whether a new connection of ``user_id`` would be one too many."""
        return (
            user_id is not None
            and self.node.connection_count(user_id) >= self.settings.max_connections_per_user
        )

    def unregister(self, connection: WebSocketConnection) -> None:
        """The socket is closed: its place in the admission count is free."""
        if connection in self.sockets:
            self.sockets.discard(connection)
            self.admission.release(connection.remote)

    async def watch_idle(self) -> None:
        """Ping connections quiet for half the idle timeout; drop those silent past it.

        One sweep over all connections every third of the timeout replaces a
        timer per connection. A dropped connection is aborted (it answers
        nothing, so a close handshake would only wait) and cleaned up like any
        other disconnect.
        """
        timeout = self.settings.idle_timeout
        loop = asyncio.get_running_loop()
        ping = control_frame(OPCODE_PING, b"")
        while True:
            await asyncio.sleep(timeout / 3)
            now = loop.time()
            quiet: list[str] = []
            for conn in self.node.connections():
                silent = now - conn.last_seen
                if silent > timeout:
                    log.info("idle timeout conn=%s user=%s", conn.id, conn.user_id)
                    conn.abort()
                elif silent > timeout / 2:
                    quiet.append(conn.id)
            if quiet:
                self.fanout.send(quiet, ping)

    async def close_all(self) -> None:
        """Graceful shutdown: every client gets 1001 after its queued frames."""
        await asyncio.gather(
            *(
                connection.close(CLOSE_GOING_AWAY, "server shutdown")
                for connection in list(self.sockets)
            ),
            return_exceptions=True,
        )


class WebSocketConnection(asyncio.Protocol):
    """One client's WebSocket: frames in to the node, close handshake both ways.

    Slotted and lean: an idle server holds one of these per client.
    """

    __slots__ = (
        "_backlog",
        "_busy",
        "_close_timer",
        "_closed",
        "_closing_frames",
        "_ended",
        "_gone",
        "_loop",
        "_received_close",
        "_released",
        "_request",
        "_sent_close",
        "conn",
        "endpoint",
        "fanout",
        "node",
        "reader",
        "remote",
        "transport",
    )

    def __init__(self, endpoint: WebSocketEndpoint, transport: asyncio.Transport, remote: str):
        self.endpoint = endpoint
        self.node = endpoint.node
        self.fanout = endpoint.fanout
        self.transport = transport
        self.remote = remote
        self.reader = FrameReader(endpoint.settings.max_message_bytes)
        self.conn: LocalConnection | None = None
        self._loop = asyncio.get_running_loop()
        self._closed: asyncio.Future[None] | None = None  # made when someone waits for it
        self._gone = False  # connection_lost has run
        self._backlog: list[Event] = []  # frames read while a request is busy
        self._busy = False  # a request of this connection is being awaited
        self._request: asyncio.Task[None] | None = None
        self._ended: str | None = None  # why it ended while a request was still busy
        self._released = False  # the node has been told the connection is over
        self._sent_close: int | None = None
        self._received_close: int | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._closing_frames = 0  # frames read after the connection began closing

    def start(self, query: dict[str, str]) -> None:
        """Authenticate and admit the connection, or tell it why not and close."""
        try:
            user_id = self.endpoint.auth.resolve(query.get("token"), query.get("user_id"))
        except AuthError as exc:
            self._refuse(ErrorCode.UNAUTHENTICATED, str(exc), CLOSE_POLICY_VIOLATION)
            return
        if self.endpoint.user_over_limit(user_id):
            why = "too many connections for this user"
            self._refuse(ErrorCode.RATE_LIMITED, why, CLOSE_POLICY_VIOLATION)
            return
        self.conn = self.node.open(self.remote, self.close, self.transport, user_id)

    def _refuse(self, code: ErrorCode, why: str, close_code: int) -> None:
        """Tell the client why in a frame it can read, then close."""
        log.info("refused code=%s reason=%s", code, why)
        self.transport.write(text_frame(encode(Error(code=code, message=why), wall_ms())))
        self._send_close(close_code, code)

    # -- incoming ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is not None:
            conn.last_seen = self._loop.time()
        events = self.reader.events(data)
        if self._busy:
            self._backlog.extend(events)
        else:
            self._handle(events)

    def _handle(self, events: Iterable[Event]) -> None:
        pending_events = iter(events)
        for event in pending_events:
            if self.transport.is_closing():
                return  # cut off: the rest is not even parsed
            pending = self._event(event)
            if pending is not None:
                # Later frames wait until this request is done, in order.
                self._busy = True
                self._backlog.extend(pending_events)
                self.transport.pause_reading()
                self._request = self._loop.create_task(pending)
                self._request.add_done_callback(self._resume)
                return

    def _resume(self, task: asyncio.Task[None]) -> None:
        self._busy = False
        self._request = None
        if not task.cancelled() and task.exception() is not None:
            log.error("request failed remote=%s error=%r", self.remote, task.exception())
        backlog, self._backlog = self._backlog, []
        self._handle(backlog)
        if self._busy:
            return
        if self._ended is not None:
            self._release(self._ended)
        if not self.transport.is_closing():
            self.transport.resume_reading()  # the client's close frame must still be read

    def _event(self, event: Event) -> Coroutine[Any, Any, None] | None:
        conn = self.conn
        if conn is None or conn.closing:  # refused, or our close frame is (on its way) out
            self._while_closing(event)
            return None
        if isinstance(event, Text):  # the hot path first
            return self.node.receive_now(conn, event.data)
        if isinstance(event, Ping):
            # Charged like any frame; an unanswered ping over the budget is the
            # only refusal (an error frame per ping would cost more than the pong).
            if self.node.control_frame(conn):
                self.fanout.send_pong(conn.id, control_frame(OPCODE_PONG, event.payload))
        elif isinstance(event, Pong):
            self.node.control_frame(conn)
        elif isinstance(event, Binary):
            self.node.receive_binary(conn)
        else:
            self._end(event)
        return None

    def _while_closing(self, event: Event) -> None:
        """After the close began only the client's close frame matters, and a
        client that keeps sending instead is dropped after a bounded number of frames."""
        if isinstance(event, Close | Violation):
            self._end(event)
            return
        self._closing_frames += 1
        if self._closing_frames > MAX_FRAMES_WHILE_CLOSING:
            log.info("dropped while closing remote=%s frames=%d", self.remote, self._closing_frames)
            self.transport.abort()

    def _end(self, event: Close | Violation) -> None:
        if isinstance(event, Close):
            self._received_close = event.code or CLOSE_NORMAL
            self._close_now(CLOSE_NORMAL)  # both close frames are on their way
            return
        log.info(
            "protocol violation remote=%s code=%d reason=%s", self.remote, event.code, event.reason
        )
        self._close_now(event.code)

    # -- closing -------------------------------------------------------------------

    async def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued; returns once the socket is closed."""
        self._stop_sending()
        self._send_close(code, reason)
        if self._gone:
            return
        if self._closed is None:
            self._closed = self._loop.create_future()
        await asyncio.shield(self._closed)

    def _close_now(self, code: int) -> None:
        """Queued frames, our close frame (code only), then the end of the connection."""
        self._stop_sending()
        self._send_close(code, "")
        self.transport.close()

    def _stop_sending(self) -> None:
        if self.conn is not None and not self.conn.closing:
            self.node.stop_sending(self.conn)

    def _send_close(self, code: int, reason: str) -> None:
        """Our close frame; the socket closes when the client's arrives (and our
        unsent bytes are written), or is dropped after ``CLOSE_TIMEOUT``.

        The connection is over for the node at once: it leaves its rooms
        now, not when (or if) the client answers.
        """
        transport = self.transport
        if self._sent_close is None and not transport.is_closing():
            self._sent_close = code
            transport.write(close_frame(code, reason))
            # Whoever started it, a client that stops reading could hold the
            # socket and its unsent bytes forever; the timer bounds that.
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, transport.abort)
        self._release(self._why())

    def _why(self, exc: BaseException | None = None) -> str:
        if exc is not None:
            return f"error {exc!r}"
        if self._received_close is not None:
            return f"closed by client code={self._received_close}"
        if self._sent_close is not None:
            return f"closed code={self._sent_close}"
        return "connection lost"

    def _release(self, reason: str) -> None:
        """Hand the connection's end to the node (once, and after a request in flight)."""
        if self._busy:
            self._ended = self._ended or reason
            return
        if self._released:
            return
        self._released = True
        if self.conn is not None:
            self.node.closed(self.conn, reason)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._release(self._why(exc))
        # The descriptor is free only now: a closing socket still counts.
        self.endpoint.unregister(self)
        self._gone = True
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
