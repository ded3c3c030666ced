"""Test support: a real roomcast process on a free port and a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``roomcast serve`` as a child process, as a user would run it."""

    def __init__(self, database: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.database = database
        self.args = list(args)
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = database.with_suffix(f".{self.port}.log")

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{self.http}/ws"

    def start(self, timeout: float = 15.0) -> ServerProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        command = [
            sys.executable, "-m", "roomcast", "serve",
            "--port", str(self.port),
            "--database", f"sqlite:///{self.database}",
            *self.args,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.http}/health", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Stop the process with ``sig``; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Client:
    """A WebSocket client speaking the roomcast protocol, for assertions."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession):
        self.ws = ws
        self._session = session
        self.connected: dict[str, Any] = {}

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
        """The next frame, whatever it is."""
        message = await asyncio.wait_for(self.ws.receive(), timeout)
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {message.type!r} {message.data!r}")
        frame: dict[str, Any] = json.loads(message.data)
        assert set(frame) == {"type", "payload", "timestamp"}, frame
        assert isinstance(frame["timestamp"], int)
        return frame

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
        """Nothing arrives for ``duration`` seconds (a ping round-trip proves the link)."""
        try:
            message = await asyncio.wait_for(self.ws.receive(), duration)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing, got {message.data!r}")

    async def sync(self) -> None:
        """Round-trip a ping: every frame the server queued before is now received."""
        await self.send("ping")
        await self.recv("pong")

    async def join(self, room_id: int, **extra: Any) -> dict[str, Any]:
        await self.send("join_room", {"room_id": room_id, **extra})
        return (await self.recv("room_users"))["payload"]

    async def chat(self, room_id: int, content: str) -> dict[str, Any]:
        """Send a chat message and return it as the server broadcast it back."""
        await self.send("chat", {"room_id": room_id, "content": content, "type": "text"})
        return (await self.recv_until("chat"))["payload"]

    async def close(self) -> None:
        await self.ws.close()
        await self._session.close()


async def http_json(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


def users(room_users_payload: dict[str, Any]) -> Sequence[str]:
    return [entry["user_id"] for entry in room_users_payload["users"]]


#: The ``connect`` fixture: ``await connect(user_id, **ws_connect_kwargs)``.
Connect = Callable[..., Awaitable[Client]]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def eventually_equal(
    probe: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 3.0
) -> None:
    """Poll ``probe`` until it returns ``expected``; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value == expected:
            return
        if time.monotonic() >= deadline:
            assert value == expected
        await asyncio.sleep(0.02)


async def expect_close(client: Client, code: int, timeout: float = 3.0) -> None:
    """The server closes ``client`` with ``code`` and sends no other frame before that."""
    message = await asyncio.wait_for(client.ws.receive(), timeout)
    closing = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
    assert message.type in closing, f"expected a close, got {message.type!r} {message.data!r}"
    assert client.ws.close_code == code, (client.ws.close_code, message)


async def http_request(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, Any]:
    """Any HTTP request: status, content type, and the body (parsed if it is JSON)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=json_body, data=data, headers=headers) as response,
    ):
        body: Any = await response.read()
        if response.content_type == "application/json":
            body = json.loads(body)
        else:
            body = body.decode(errors="replace")
        return response.status, response.content_type, body
