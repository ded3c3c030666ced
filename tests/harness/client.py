"""A WebSocket client speaking the roomcast protocol, built on aiohttp's client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp


class Client:
    """A WebSocket client speaking the roomcast protocol, for assertions."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession):
        self.ws = ws
        self._session = session
        self.connected: dict[str, Any] = {}
        #: The ``unread`` frame that follows ``connected`` for a known user.
        self.unread: dict[str, Any] = {}
        #: Whether ``unread`` frames are passed over (kept in :attr:`unreads`):
        #: tests of other things need not expect them wherever counts change.
        self.skip_unread = True
        self.unreads: list[dict[str, Any]] = []

    @classmethod
    async def connect(
        cls,
        url: str,
        user_id: str | None = None,
        token: str | None = None,
        expect_connected: bool = True,
        **kwargs: Any,
    ) -> Client:
        params = {}
        if user_id is not None:
            params["user_id"] = user_id
        if token is not None:
            params["token"] = token
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(url, params=params, **kwargs)
        client = cls(ws, session)
        if expect_connected:
            client.connected = (await client.recv("connected"))["payload"]
            if client.connected["user_id"] is not None:
                client.skip_unread = False
                client.unread = (await client.recv("unread"))["payload"]
                client.skip_unread = True
        return client

    @property
    def connection_id(self) -> str:
        return str(self.connected["connection_id"])

    async def send(self, type: str, payload: Any = None, **extra: Any) -> None:
        message: dict[str, Any] = {"type": type, "timestamp": int(time.time() * 1000)}
        if payload is not None:
            message["payload"] = payload
        message.update(extra)
        await self.ws.send_str(json.dumps(message))

    async def send_raw(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def next(self, timeout: float = 3.0) -> dict[str, Any]:
        """The next frame, whatever it is (but ``unread``, see :attr:`skip_unread`)."""
        while True:
            message = await asyncio.wait_for(self.ws.receive(), timeout)
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise AssertionError(
                    f"expected a text frame, got {message.type!r} {message.data!r}"
                )
            frame: dict[str, Any] = json.loads(message.data)
            assert set(frame) == {"type", "payload", "timestamp"}, frame
            assert isinstance(frame["timestamp"], int)
            if frame["type"] != "unread" or not self.skip_unread:
                return frame
            self.unreads.append(frame["payload"])

    async def recv(self, type: str | None = None, timeout: float = 3.0) -> dict[str, Any]:
        """The next frame, which must be of ``type`` when given."""
        frame = await self.next(timeout)
        if type is not None:
            assert frame["type"] == type, f"expected {type}, got {frame}"
        return frame

    async def recv_until(self, type: str, timeout: float = 3.0) -> dict[str, Any]:
        """Skip frames until one of ``type`` arrives."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - time.monotonic()))
            if frame["type"] == type:
                return frame

    async def recv_many(self, count: int, timeout: float = 3.0) -> list[dict[str, Any]]:
        return [await self.next(timeout) for _ in range(count)]

    async def expect_error(self, code: str, type: str | None = None) -> dict[str, Any]:
        frame = await self.recv("error")
        payload: dict[str, Any] = frame["payload"]
        assert payload["code"] == code, payload
        assert isinstance(payload["message"], str) and payload["message"], payload
        if type is not None:
            assert payload.get("type") == type, payload
        return payload

    async def expect_silence(self, duration: float = 0.3) -> None:
        """Nothing arrives for ``duration`` seconds (a ping round-trip proves the link);
        ``unread`` counts are passed over as :meth:`next` does."""
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(self.ws.receive(), left)
            except TimeoutError:
                return
            if self.skip_unread and message.type is aiohttp.WSMsgType.TEXT:
                frame = json.loads(message.data)
                if frame.get("type") == "unread":
                    self.unreads.append(frame["payload"])
                    continue
            raise AssertionError(f"expected nothing, got {message.data!r}")

    async def sync(self) -> None:
        """Round-trip a ping: every frame the server queued before is now received."""
        await self.send("ping")
        await self.recv("pong")

    async def join(self, room_id: int, **extra: Any) -> dict[str, Any]:
        await self.send("join_room", {"room_id": room_id, **extra})
        payload: dict[str, Any] = (await self.recv("room_users"))["payload"]
        return payload

    async def chat(self, room_id: int, content: str) -> dict[str, Any]:
        """Send a chat message and return it as the server broadcast it back."""
        await self.send("chat", {"room_id": room_id, "content": content, "type": "text"})
        payload: dict[str, Any] = (await self.recv_until("chat"))["payload"]
        return payload

    async def close(self) -> None:
        await self.ws.close()
        await self._session.close()


def without_activity(users: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``room_users`` entries without ``last_active_at``, which follows the clock."""
    return [{k: v for k, v in user.items() if k != "last_active_at"} for user in users]


def users(room_users_payload: dict[str, Any]) -> Sequence[str]:
    return [entry["user_id"] for entry in room_users_payload["users"]]


#: The ``connect`` fixture: ``await connect(user_id, **ws_connect_kwargs)``.
Connect = Callable[..., Awaitable[Client]]


async def expect_close(client: Client, code: int, timeout: float = 3.0) -> None:
    """The server closes ``client`` with ``code`` and sends no other frame before that."""
    message = await asyncio.wait_for(client.ws.receive(), timeout)
    closing = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
    assert message.type in closing, f"expected a close, got {message.type!r} {message.data!r}"
    # The close frame's own code: when the server drops the TCP connection
    # right after it, aiohttp reports its failed reply as 1006.
    received = message.data if message.type is aiohttp.WSMsgType.CLOSE else client.ws.close_code
    assert received == code, (received, message)
