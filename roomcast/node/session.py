"""Client frames in: decode, rate limits, identity, then the feature that owns the type.

The session also opens and closes this node's connections. One request per
connection is in flight at a time: a handler that must wait (``join_room``
reads the database; joins and leaves wait for the log) returns a coroutine,
which the transport finishes before it hands in the connection's next frame.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from roomcast.core.limits import MessageClass
from roomcast.node.connections import LocalConnection
from roomcast.node.feature import Feature, NodeParts, Route
from roomcast.ports.broker import Closed, Identified, Opened
from roomcast.ports.outlet import Writable
from roomcast.ports.store import StoreUnavailable
from roomcast.protocol import (
    CLIENT_TYPES,
    ChatRequest,
    Connected,
    ErrorCode,
    ProtocolError,
    Request,
    decode_client,
    error_event,
)

log = logging.getLogger("roomcast.node")

#: WebSocket close code for policy violations (floods, slow consumers).
CLOSE_POLICY_VIOLATION = 1008


class Session:
    def __init__(
        self, parts: NodeParts, routes: Iterable[Route], features: Sequence[Feature] = ()
    ) -> None:
        self.parts = parts
        self.features = features
        self._routes: dict[type[Request], Route] = {}
        for route in routes:
            if route.request in self._routes:
                raise ValueError(f"two handlers for {route.request.TYPE}")
            self._routes[route.request] = route
        unhandled = set(CLIENT_TYPES.values()) - set(self._routes)
        if unhandled:
            raise ValueError(f"no handler for {sorted(t.TYPE for t in unhandled)}")

    # -- connection lifecycle -------------------------------------------------------------

    def open(
        self,
        remote: str,
        close: Callable[[int, str], Coroutine[Any, Any, None]],
        transport: Writable,
        user_id: str | None,
    ) -> LocalConnection:
        parts = self.parts
        conn = LocalConnection(
            id=parts.clock.new_id(),
            remote=remote,
            close=close,
            abort=transport.abort,
            gone=transport.is_closing,
            user_id=user_id,
            last_seen=asyncio.get_running_loop().time(),
        )
        parts.registry.add_own(conn)
        parts.outbox.outlet.add(conn.id, transport)
        parts.append(Opened(conn.id, parts.broker.node_id, user_id))
        log.info("connect conn=%s user=%s remote=%s", conn.id, user_id, remote)
        parts.outbox.send(conn, Connected(connection_id=conn.id, user_id=user_id))
        if user_id is not None:
            self._user_connected(conn)
        return conn

    def _user_connected(self, conn: LocalConnection) -> None:
        greetings = [g for f in self.features if (g := f.user_connected(conn)) is not None]
        if greetings:
            conn.greeting = asyncio.gather(*greetings, return_exceptions=True)

    def closed(self, conn: LocalConnection, reason: str) -> None:
        """The connection is gone: its rooms, typing and presence follow through the log."""
        if conn.closed:
            return
        conn.closed = True
        parts = self.parts
        parts.registry.remove_own(conn)
        parts.outbox.membership_changed(parts.engine.rooms.rooms_of(conn.id))
        parts.outbox.outlet.remove(conn.id)
        parts.append(Closed(conn.id, parts.clock.now(), parts.clock.wall_ms(), conn.user_id))
        parts.waits.settle(conn.id)
        if parts.limiter is not None:
            parts.limiter.forget_connection(conn.id)
        log.info("disconnect conn=%s user=%s reason=%s", conn.id, conn.user_id, reason)

    def slow_consumer(self, conn_id: str) -> None:
        """A client that does not read: drop it at once, the room must not wait.

        It cannot read a close frame either, so the socket is aborted; the
        usual cleanup follows when the endpoint sees the connection end.
        """
        conn = self.parts.registry.get(conn_id)
        if conn is None or conn.closed:
            return
        log.warning("slow consumer conn=%s user=%s", conn.id, conn.user_id)
        self.parts.metrics.slow_consumer_disconnects += 1
        self.parts.outbox.outlet.remove(conn.id)
        conn.abort()

    def stop_sending(self, conn: LocalConnection) -> None:
        """Write what is queued for the connection, then nothing: its close frame follows."""
        conn.closing = True
        outlet = self.parts.outbox.outlet
        outlet.flush_connection(conn.id)
        outlet.remove(conn.id)

    def close_soon(self, conn: LocalConnection, code: int, reason: str) -> None:
        """Close a connection after what is queued for it, without awaiting here.

        From this moment nothing more is sent to it or acted on from it.
        """
        self.stop_sending(conn)
        self.parts.tasks.spawn(conn.close(code, reason))

    def connection_count(self, user_id: str) -> int:
        """The user's open connections in the cluster: those of the replica, and this
        node's own at once (the replica learns of a new one only from the log)."""
        parts = self.parts
        return len(set(parts.engine.connections_of(user_id)) | parts.registry.own_of_user(user_id))

    # -- frames ----------------------------------------------------------------------

    def receive_now(
        self, conn: LocalConnection, data: bytes | str
    ) -> Coroutine[Any, Any, None] | None:
        """Handle one client frame as far as possible without waiting; what is left
        is returned as a coroutine, which the caller must finish before it hands
        this connection's next frame in."""
        if conn.closing:
            return None
        if conn.greeting is not None:
            if not conn.greeting.done():
                return self._after_greeting(conn, data)
            conn.greeting = None
        request_type: str | None = None
        request: Request | None = None
        try:
            request = decode_client(data)
        except ProtocolError as exc:
            self._refuse_garbage(conn, exc)
            return None
        try:
            request_type = request.TYPE
            route = self._routes[type(request)]
            self.parts.metrics.messages_in[request_type] += 1
            self._limit(conn, route.rate, request_type)
            self._check_identity(conn, request, route.anonymous)
            if conn.greeting is not None:  # identified by this very request
                return self._guarded(conn, request, self._greeted(conn, route, request))
            pending = route.handle(conn, request)
            if pending is not None:
                return self._guarded(conn, request, pending)
        except Exception as exc:
            self._fail(conn, request, request_type, exc)
        return None

    async def _after_greeting(self, conn: LocalConnection, data: bytes | str) -> None:
        """A frame that came before the connection's greeting went out: after it."""
        assert conn.greeting is not None
        await asyncio.shield(conn.greeting)
        pending = self.receive_now(conn, data)
        if pending is not None:
            await pending

    async def _greeted(self, conn: LocalConnection, route: Route, request: Request) -> None:
        greeting = conn.greeting
        if greeting is not None:
            await asyncio.shield(greeting)
            conn.greeting = None
        pending = route.handle(conn, request)
        if pending is not None:
            await pending

    def receive_binary(self, conn: LocalConnection) -> None:
        """A binary frame: refused like any frame that is not a request."""
        if not conn.closing:
            error = ProtocolError(ErrorCode.INVALID_MESSAGE, "frames must be JSON text, not binary")
            self._refuse_garbage(conn, error)

    def control_frame(self, conn: LocalConnection) -> bool:
        """A WebSocket ping or pong: charged to the connection's control budget.

        False when it is over budget (a ping is then not answered); the refusal
        is a strike like any other, so a connection that floods them is cut.
        """
        try:
            self._limit(conn, MessageClass.CONTROL, None)
        except ProtocolError:
            return False
        return True

    def _refuse_garbage(self, conn: LocalConnection, error: ProtocolError) -> None:
        """A frame that is no request: counted, charged to the rate limits (garbage
        counts too), and answered with its error, or with the limiter's refusal."""
        self.parts.metrics.messages_in["invalid"] += 1
        try:
            self._limit(conn, MessageClass.OTHER, error.type)
        except ProtocolError as refused:
            error = refused
        self.parts.outbox.reply_error(conn, error)

    async def _guarded(
        self, conn: LocalConnection, request: Request, work: Coroutine[Any, Any, None]
    ) -> None:
        try:
            await work
        except Exception as exc:
            self._fail(conn, request, request.TYPE, exc)

    def _fail(
        self,
        conn: LocalConnection,
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
        self.parts.outbox.reply_error(conn, error)

    def _limit(self, conn: LocalConnection, cls: MessageClass, request_type: str | None) -> None:
        """Take a token for this message, or refuse it (and cut a flooding client)."""
        limiter = self.parts.limiter
        if limiter is None:
            return
        now = self.parts.clock.now()
        wait = limiter.check(conn.id, conn.user_id, cls, now)
        if not wait:
            return
        metrics = self.parts.metrics
        metrics.rate_limited[cls] += 1
        if limiter.strike(conn.id, now):
            metrics.flood_disconnects += 1
            log.warning("flood conn=%s user=%s class=%s", conn.id, conn.user_id, cls)
            self.close_soon(conn, CLOSE_POLICY_VIOLATION, "flooding")
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            f"too many {cls} messages; slow down",
            request_type,
            retry_after_ms=math.ceil(wait * 1000),
        )

    def _check_identity(self, conn: LocalConnection, request: Request, anonymous: bool) -> None:
        claimed = request.claimed_users()
        settings = self.parts.settings
        if conn.user_id is None:
            if claimed and settings.open_mode and len(set(claimed)) == 1:
                if self.connection_count(claimed[0]) >= settings.max_connections_per_user:
                    refusal = ProtocolError(
                        ErrorCode.RATE_LIMITED, "too many connections for this user", request.TYPE
                    )
                    self.parts.outbox.send(conn, error_event(refusal))  # the error, then the close
                    self.close_soon(conn, CLOSE_POLICY_VIOLATION, "too many connections")
                    raise refusal
                conn.user_id = claimed[0]
                self.parts.registry.own_user(conn)
                self.parts.append(Identified(conn.id, claimed[0]))
                log.info("identify conn=%s user=%s", conn.id, claimed[0])
                self._user_connected(conn)
            elif claimed and settings.open_mode:
                raise ProtocolError(
                    ErrorCode.FORBIDDEN,
                    "payload.user_id and payload.from_user_id name different users",
                    request.TYPE,
                )
            elif not anonymous:
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
