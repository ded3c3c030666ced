"""The ``/ws`` endpoint: aiohttp's WebSocket handshake and reader, our writer.

aiohttp parses frames, answers pings and runs the heartbeat; outgoing frames
go through the corked :class:`~roomcast.transport.fanout.FanOut` instead of
``send_str`` (see that module for why). ``autoclose=False`` keeps aiohttp from
answering a client's CLOSE before our queued frames are written, and
``compress=False`` because the fan-out writes plain frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from aiohttp import WSCloseCode, WSMsgType, web

from roomcast.auth import Authenticator, AuthError
from roomcast.config import Settings
from roomcast.protocol import Error, ErrorCode, ProtocolError, encode
from roomcast.service import ChatService, wall_ms
from roomcast.transport.fanout import OPCODE_PING, OPCODE_PONG, control_frame

log = logging.getLogger("roomcast.websocket")


class WebSocketEndpoint:
    def __init__(self, service: ChatService, auth: Authenticator, settings: Settings) -> None:
        self.service = service
        self.auth = auth
        self.settings = settings
        self.sockets: set[web.WebSocketResponse] = set()
        self._per_address: Counter[str] = Counter()

    def new_socket(self) -> web.WebSocketResponse:
        # No aiohttp heartbeat and no autoping: aiohttp's heartbeat re-arms a
        # timer on every received chunk of every connection. Instead each
        # frame stamps conn.last_seen and one task (watch_idle) pings the
        # quiet connections and drops the silent ones.
        return web.WebSocketResponse(
            autoping=False,
            autoclose=False,
            compress=False,
            # aiohttp refuses a frame of max_msg_size bytes; ours is the largest allowed.
            max_msg_size=self.settings.max_message_bytes + 1,
        )

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = self.new_socket()
        await ws.prepare(request)
        transport = request.transport
        if transport is None:
            return ws
        remote = request.remote or "?"
        try:
            user_id = self.auth.resolve(request.query.get("token"), request.query.get("user_id"))
        except AuthError as exc:
            await self._refuse(ws, ErrorCode.UNAUTHENTICATED, str(exc))
            return ws
        refusal = self._over_limit(remote, user_id)
        if refusal is not None:
            code, why = refusal
            await self._refuse(ws, ErrorCode.RATE_LIMITED, why, close_code=code)
            return ws

        async def close(code: int, reason: str) -> None:
            service.stop_sending(conn)
            await ws.close(code=code, message=reason.encode())

        service = self.service
        loop = asyncio.get_running_loop()
        conn = service.open(remote, close, transport, user_id)
        self.sockets.add(ws)
        self._per_address[remote] += 1
        reason = "closed by client"
        try:
            async for message in ws:
                conn.last_seen = loop.time()
                if message.type is WSMsgType.TEXT:
                    await service.receive(conn, message.data)
                elif message.type is WSMsgType.PING:
                    service.fanout.send((conn.id,), control_frame(OPCODE_PONG, message.data))
                elif message.type is WSMsgType.PONG:
                    pass  # last_seen is all a pong is for
                elif message.type is WSMsgType.BINARY:
                    service.reply_error(
                        conn,
                        ProtocolError(
                            ErrorCode.INVALID_MESSAGE, "frames must be JSON text, not binary"
                        ),
                    )
                elif message.type is WSMsgType.CLOSE:
                    service.stop_sending(conn)
                    await ws.close()
                    break
                elif message.type is WSMsgType.ERROR:
                    reason = f"error {ws.exception()!r}"
                    break
            else:
                if ws.close_code is not None:
                    reason = f"closed code={ws.close_code}"
        except asyncio.CancelledError:
            reason = "server shutdown"
            raise
        finally:
            self.sockets.discard(ws)
            self._per_address[remote] -= 1
            if not self._per_address[remote]:
                del self._per_address[remote]
            service.closed(conn, reason)
        return ws

    def _over_limit(self, remote: str, user_id: str | None) -> tuple[int, str] | None:
        """Why a new connection may not stay, with its close code; None if it may."""
        settings = self.settings
        if len(self.sockets) >= settings.max_connections:
            return WSCloseCode.TRY_AGAIN_LATER, "the server is full; try again later"
        if self._per_address[remote] >= settings.max_connections_per_ip:
            return WSCloseCode.POLICY_VIOLATION, "too many connections from this address"
        if (
            user_id is not None
            and self.service.connection_count(user_id) >= settings.max_connections_per_user
        ):
            return WSCloseCode.POLICY_VIOLATION, "too many connections for this user"
        return None

    async def _refuse(
        self,
        ws: web.WebSocketResponse,
        code: ErrorCode,
        why: str,
        close_code: int = WSCloseCode.POLICY_VIOLATION,
    ) -> None:
        """Tell the client why in a frame it can read, then close."""
        log.info("refused code=%s reason=%s", code, why)
        frame = encode(Error(code=code, message=why), wall_ms())
        await ws.send_str(frame.decode())
        await ws.close(code=close_code, message=code.encode())

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
            for conn in self.service.connections():
                silent = now - conn.last_seen
                if silent > timeout:
                    log.info("idle timeout conn=%s user=%s", conn.id, conn.user_id)
                    conn.abort()
                elif silent > timeout / 2:
                    quiet.append(conn.id)
            if quiet:
                self.service.fanout.send(quiet, ping)

    async def close_all(self) -> None:
        """Graceful shutdown: every client gets 1001 after its queued frames."""
        await asyncio.gather(
            *(
                conn.close(WSCloseCode.GOING_AWAY, "server shutdown")
                for conn in self.service.connections()
            ),
            return_exceptions=True,
        )
