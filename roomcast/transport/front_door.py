"""Every TCP connection of the listening socket, from accept to close.

A :class:`FrontDoor` is made for each accepted connection. It counts the
connection against the limits (:mod:`roomcast.transport.admission`), reads
the first request head and then:

* a valid WebSocket upgrade of ``/ws`` becomes a
  :class:`~roomcast.transport.websocket.WebSocketConnection`, which takes the
  transport (and the connection's place in the count) over;
* anything else is served by aiohttp's HTTP protocol, with the front door
  staying in between: it passes every call on and keeps the deadlines
  aiohttp has none of, so that no connection can hold its descriptor by
  sending a request slowly or not at all:

  - a request head must be complete within ``--head-timeout`` of the
    connection's start or of the end of its previous request (this also
    ends idle keep-alive connections);
  - a request body must arrive within ``--body-timeout`` (408);
  - a response the client does not read must not stall for longer than
    ``--idle-timeout``.

A connection the limits refuse is still read until its request head (for
at most :data:`REFUSAL_TIMEOUT`) so that it can be told why in its own
protocol: HTTP 503 or 429, or a WebSocket ``error`` frame and close 1013
or 1008.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.typedefs import Middleware

from roomcast.metrics import Metrics
from roomcast.protocol import ErrorCode, encode_json
from roomcast.transport.admission import Admission, Refusal
from roomcast.transport.handshake import MAX_HEAD, parse_upgrade

if TYPE_CHECKING:
    from roomcast.transport.websocket import WebSocketEndpoint

log = logging.getLogger("roomcast.connections")

PATH = "/ws"
_PREFIX = b"GET " + PATH.encode()

#: Seconds a refused connection may take to send the head it is answered after.
REFUSAL_TIMEOUT = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gate:
    """Makes the front door of each new connection; knows those still undecided."""

    def __init__(
        self,
        admission: Admission,
        endpoint: WebSocketEndpoint,
        head_timeout: float,
        write_stall_timeout: float,
        metrics: Metrics,
    ) -> None:
        self.admission = admission
        self.metrics = metrics
        self.endpoint = endpoint
        self.head_timeout = head_timeout
        self.write_stall_timeout = write_stall_timeout
        self.undecided: set[FrontDoor] = set()
        self.closing = False  # shutting down: no new connection is taken

    def factory(self, http: Callable[[], asyncio.BaseProtocol]) -> Callable[[], FrontDoor]:
        """The protocol factory for the listening socket; ``http`` is aiohttp's."""
        return lambda: FrontDoor(self, http)

    def close(self) -> None:
        """Shutdown: connections that have not said what they are are closed."""
        self.closing = True
        for door in list(self.undecided):
            door.abandon()


class FrontDoor(asyncio.Protocol):
    """One TCP connection: its place in the count, its first head, its HTTP deadlines."""

    def __init__(self, gate: Gate, http: Callable[[], asyncio.BaseProtocol]) -> None:
        self._gate = gate
        self._http_factory = http
        self._http: asyncio.Protocol | None = None  # aiohttp's, once it serves the connection
        self._head = bytearray()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._address = "?"
        self._admitted = False  # holds a place in the count until released
        self._refusal: Refusal | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None  # while writing is paused
        self._close_timer: asyncio.TimerHandle | None = None  # while a close waits for output
        self._requests = 0  # HTTP requests being handled

    # -- accepting ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but are one.
        self._transport = cast(asyncio.Transport, transport)
        gate = self._gate
        if gate.closing:  # accepted just before the listener closed
            transport.close()
            return
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) else "?"
        now = self._loop.time()
        refusal = gate.admission.admit(self._address, now)
        if refusal is None:
            self._admitted = True
            timeout = gate.head_timeout
        elif gate.admission.can_refuse():
            gate.metrics.connections_refused[refusal.kind] += 1
            self._refusal = refusal
            timeout = min(REFUSAL_TIMEOUT, gate.head_timeout)
        else:
            gate.metrics.connections_refused["dropped"] += 1
            log.info("dropped at once remote=%s reason=%s", self._address, refusal.reason)
            self._transport.abort()
            return
        gate.undecided.add(self)
        self._await_head(now, timeout)

    def _await_head(self, now: float, timeout: float) -> None:
        if self._admitted:
            self._gate.admission.waiting(self, now)
        self._head_timer = self._loop.call_at(now + timeout, self._head_overdue)

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._gate.admission.not_waiting(self)

    def _head_overdue(self) -> None:
        self._head_timer = None
        log.info("no request head in time remote=%s", self._address)
        self._gate.admission.not_waiting(self)
        transport = self._transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            # A response is still going out: close() waits for it, but not forever.
            self._close_timer = self._loop.call_later(
                self._gate.write_stall_timeout, self._write_stalled
            )
        transport.close()

    # -- the first request head -------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._http is not None:
            self._http.data_received(data)
            return
        head = self._head
        head += data
        if self._refusal is not None:
            end = head.find(b"\r\n\r\n")
            if end >= 0 or len(head) > MAX_HEAD:
                self._refuse(bytes(head[: max(end, 0)]))
            return
        if not head.startswith(_PREFIX):
            if not _PREFIX.startswith(head):
                self._to_http()
            return  # too short to tell yet
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_HEAD:
                self._to_http()
            return
        upgrade = parse_upgrade(bytes(head[:end]), PATH) if end <= MAX_HEAD else None
        if upgrade is None:
            self._to_http()
            return
        self._decided()
        self._head_arrived()
        assert self._transport is not None
        self._admitted = False  # the WebSocket connection holds the place from now on
        self._gate.endpoint.accept(self._transport, upgrade, bytes(head[end + 4 :]), self._address)

    def _decided(self) -> None:
        self._gate.undecided.discard(self)

    def _to_http(self) -> None:
        """aiohttp serves the connection, as if it had accepted it itself."""
        self._decided()
        protocol = cast(asyncio.Protocol, self._http_factory())
        self._http = protocol
        head, self._head = bytes(self._head), bytearray()
        protocol.connection_made(cast(asyncio.Transport, self._transport))
        protocol.data_received(head)

    def _refuse(self, head: bytes) -> None:
        """Tell a refused connection why, in its own protocol, and close it."""
        refusal = self._refusal
        transport = self._transport
        assert refusal is not None and transport is not None
        self._decided()
        self._head_arrived()
        upgrade = parse_upgrade(head, PATH) if head.startswith(_PREFIX) else None
        log.info("refused remote=%s reason=%s", self._address, refusal.reason)
        if upgrade is not None:
            self._gate.endpoint.refuse(transport, upgrade, refusal)
            return
        body = encode_json({"error": {"code": ErrorCode.RATE_LIMITED, "message": refusal.reason}})
        status = (
            "503 Service Unavailable" if refusal.http_status == 503 else "429 Too Many Requests"
        )
        transport.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        transport.close()

    # -- an HTTP connection's requests (see request_deadlines) -------------------------

    def request_started(self) -> None:
        self._requests += 1
        self._head_arrived()

    def request_finished(self) -> None:
        self._requests -= 1
        transport = self._transport
        if self._requests == 0 and transport is not None and not transport.is_closing():
            self._await_head(self._loop.time(), self._gate.head_timeout)

    # -- passed on to aiohttp -----------------------------------------------------------

    def eof_received(self) -> bool | None:
        if self._http is not None:
            return self._http.eof_received()
        return False  # the transport closes itself

    def pause_writing(self) -> None:
        # The client does not read what it asked for: not forever.
        self._stall_timer = self._loop.call_later(
            self._gate.write_stall_timeout, self._write_stalled
        )
        if self._http is not None:
            self._http.pause_writing()

    def resume_writing(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._http is not None:
            self._http.resume_writing()

    def _write_stalled(self) -> None:
        self._stall_timer = None
        log.info("response not read in time remote=%s", self._address)
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._head_timer, self._stall_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._decided()
        self._release()
        if self._refusal is not None:
            self._refusal = None
            self._gate.admission.refused()
        if self._http is not None:
            # asyncio passes what the transport raised; aiohttp's signature says Exception.
            self._http.connection_lost(cast(Exception | None, exc))

    def _release(self) -> None:
        self._gate.admission.not_waiting(self)
        if self._admitted:
            self._admitted = False
            self._gate.admission.release(self._address)

    # -- dropped by the server ------------------------------------------------------------

    def displace(self) -> None:
        """The server is full and this connection has sent no request: make room."""
        log.info("displaced without a request remote=%s", self._address)
        self._gate.metrics.connections_displaced += 1
        self._release()
        if self._transport is not None:
            self._transport.abort()

    def abandon(self) -> None:
        """The server is stopping."""
        if self._transport is not None:
            self._transport.close()


def streams_body(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a route handler that reads its request body itself, as it
    arrives (an upload): :func:`request_deadlines` leaves its body alone, and
    the handler bounds the wait for each part."""
    handler.streams_body = True  # type: ignore[attr-defined]
    return handler


def request_deadlines(body_timeout: float) -> Middleware:
    """aiohttp middleware: tells the front door when a request is handled (from
    its head to the end of its response), and reads the request's body within
    ``body_timeout``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        door = transport.get_protocol() if transport is not None else None
        if isinstance(door, FrontDoor):
            door.request_started()
        try:
            if request.body_exists and not getattr(
                request.match_info.handler, "streams_body", False
            ):
                try:
                    await asyncio.wait_for(request.read(), body_timeout)
                except TimeoutError:
                    log.info("request body not received in time remote=%s", request.remote)
                    # HTTP's own status: no protocol error code means "too slow".
                    error = {
                        "code": "request_timeout",
                        "message": "the request body did not arrive in time",
                    }
                    raise web.HTTPRequestTimeout(
                        body=encode_json({"error": error}),
                        content_type="application/json",
                        headers={"Connection": "close"},
                    ) from None
            response = await handler(request)
            # Written here, so that the wait for the next request head starts
            # once this response is out (aiohttp would write it after us).
            await response.prepare(request)
            await response.write_eof()
            return response
        except ConnectionError as exc:
            if transport is not None and not transport.is_closing():
                raise  # not the client's doing: logged as the error it is
            # The client went away mid-request: nothing failed here, and aiohttp
            # would log a traceback for it. The answer is never delivered.
            log.info(
                "http request aborted by the client remote=%s method=%s path=%s error=%r",
                request.remote,
                request.method,
                request.path,
                exc,
            )
            return web.Response(status=400, text="the client went away")
        finally:
            if isinstance(door, FrontDoor):
                door.request_finished()

    return middleware
