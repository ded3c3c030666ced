"""Test support: a real roomcast process on a free port and a real WebSocket client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import resource
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: ``ROOMCAST_TEST_BACKEND=cluster`` runs every server on PostgreSQL + Redis as a
#: one-node cluster (each server in its own schema and key prefix), so that the
#: whole single-node suite checks both back ends.
CLUSTER = os.environ.get("ROOMCAST_TEST_BACKEND") == "cluster"
POSTGRES_URL = os.environ.get("ROOMCAST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ROOMCAST_TEST_REDIS", "redis://127.0.0.1:6379/0")


def cluster_args(name: str) -> list[str]:
    """Flags that put a server on PostgreSQL schema ``name`` and Redis prefix ``name``."""
    return [
        "--database", f"{POSTGRES_URL}?search_path={name}",
        "--broker", REDIS_URL,
        "--broker-prefix", name,
    ]  # fmt: skip


#: Cluster names servers of this test session used (dropped when it ends).
CLUSTERS_USED: set[str] = set()


def drop_cluster_state(name: str) -> None:
    """Remove a test cluster's schema and keys."""
    subprocess.run(
        ["psql", POSTGRES_URL, "-q", "-c", f"DROP SCHEMA IF EXISTS {name} CASCADE"],
        check=False,
        capture_output=True,
    )
    subprocess.run(
        ["redis-cli", "-u", REDIS_URL, "DEL", f"{name}:log", f"{name}:nodes"],
        check=False,
        capture_output=True,
    )


async def history(server: ServerProcess, room_id: int) -> list[dict[str, Any]]:
    """Every stored message of the room, oldest first, following the HTTP history pages."""
    messages: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        query = "limit=100" + (f"&before={before}" if before is not None else "")
        status, page = await http_json("GET", f"{server.http}/api/rooms/{room_id}/messages?{query}")
        assert status == 200, page
        messages[:0] = page["messages"]
        before = page["next_before"]
        if before is None:
            return messages


async def all_rooms(
    server: ServerProcess, query: str = "", headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every room ``GET /api/rooms?<query>`` lists, following its pages."""
    rooms: list[dict[str, Any]] = []
    after = 0
    while True:
        url = f"{server.http}/api/rooms?limit=500&after={after}" + (f"&{query}" if query else "")
        status, page = await http_json("GET", url, headers=headers)
        assert status == 200, page
        rooms += page["rooms"]
        if page["next"] is None:
            return rooms
        after = page["next"]


def stored(message: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The history item of a broadcast ``chat`` payload."""
    return {**message, "edited_at": None, "reactions": {}, **changes}


def stored_ids(server: ServerProcess) -> set[int]:
    """Ids of every message in the server's database, whichever database it is."""
    return {message_id for message_id, _ in stored_messages(server)}


def stored_messages(server: ServerProcess) -> list[tuple[int, int]]:
    """``(id, room_id)`` of every message in the server's database, by id."""
    if server.cluster is None:
        with sqlite3.connect(server.database) as conn:
            query = "SELECT id, room_id FROM messages ORDER BY id"
            return [(row[0], row[1]) for row in conn.execute(query)]
    query = f"SELECT id, room_id FROM {server.cluster}.messages ORDER BY id"
    result = subprocess.run(
        ["psql", POSTGRES_URL, "-At", "-F", " ", "-c", query],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = (line.split() for line in result.stdout.splitlines() if line.strip())
    return [(int(message_id), int(room_id)) for message_id, room_id in rows]


@contextlib.asynccontextmanager
async def database_locked(server: ServerProcess, rooms: bool = False) -> AsyncIterator[None]:
    """Another process holds the write lock of the server's database until the block ends.

    On PostgreSQL that locks the messages table; ``rooms=True`` also locks the
    rooms table against reads, so that a ``join_room`` waits too.
    """
    if server.cluster is None:
        blocker = sqlite3.connect(server.database, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            blocker.rollback()
            blocker.close()
        return
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(f"LOCK TABLE {server.cluster}.messages IN EXCLUSIVE MODE")
        if rooms:
            await conn.execute(f"LOCK TABLE {server.cluster}.rooms IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await transaction.rollback()
    finally:
        await conn.close()


class ServerProcess:
    """``roomcast serve`` as a child process, as a user would run it.

    ``cluster`` names a PostgreSQL schema and Redis prefix: several processes
    with the same name are nodes of one cluster.
    """

    def __init__(
        self,
        database: Path,
        *args: str,
        env: dict[str, str] | None = None,
        cluster: str | None = None,
        open_files: int | None = None,
    ) -> None:
        self.database = database
        self.open_files = open_files  # the process's descriptor limit, when given
        self.args = list(args)
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = database.with_suffix(f".{self.port}.log")
        if cluster is None and CLUSTER:
            cluster = "t_" + hashlib.sha1(str(database).encode()).hexdigest()[:16]
        self.cluster = cluster

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{self.http}/ws"

    def start(self, timeout: float = 15.0) -> ServerProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if self.cluster:
            CLUSTERS_USED.add(self.cluster)
        backend = (
            cluster_args(self.cluster)
            if self.cluster
            else ["--database", f"sqlite:///{self.database}"]
        )
        command = [
            sys.executable, "-m", "roomcast", "serve",
            "--port", str(self.port),
            *backend,
            *self.args,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        limit = self.open_files
        self.proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=log,
            env=env,
            preexec_fn=(
                None
                if limit is None
                else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            ),
        )
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
    # The close frame's own code: when the server drops the TCP connection
    # right after it, aiohttp reports its failed reply as 1006.
    received = message.data if message.type is aiohttp.WSMsgType.CLOSE else client.ws.close_code
    assert received == code, (received, message)


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


# -- a WebSocket client on a plain socket ------------------------------------------------

_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA


def mask_frame(
    payload: bytes,
    opcode: int = OPCODE_TEXT,
    fin: bool = True,
    key: bytes | None = None,
    rsv: int = 0,
    masked: bool = True,
) -> bytes:
    """One client frame as RFC 6455 section 5.2 has it: masked with ``key`` (random if None).

    ``rsv`` sets reserved bits and ``masked=False`` leaves the mask out, as no
    conforming client would.
    """
    key = os.urandom(4) if key is None else key
    assert len(key) == 4
    length = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return header + payload
    keystream = (key * (length // 4 + 1))[:length]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(
        length, "big"
    )
    return header + key + body


def close_code(payload: bytes) -> int | None:
    """The status code of a close frame's payload (None when it carries none)."""
    if len(payload) < 2:
        return None
    code: int = struct.unpack("!H", payload[:2])[0]
    return code


class RawWebSocket:
    """A WebSocket client on a non-blocking socket that reads only when told to.

    Unlike aiohttp's client it never reads ahead, so it can play a client that
    stops reading, and it can send frames no library would (invalid UTF-8).
    """

    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        self.sock = sock
        self._buffer = bytearray(buffered)

    @classmethod
    async def connect(
        cls, port: int, query: str = "", rcvbuf: int | None = None, timeout: float = 5.0
    ) -> RawWebSocket:
        """Open ``/ws?<query>`` by hand: HTTP upgrade written and its 101 checked here."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect(), so that the window offered in the handshake is small too.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
            key = base64.b64encode(os.urandom(16))
            request = (
                f"GET /ws{'?' + query if query else ''} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key.decode()}\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                "\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
                if not chunk:
                    raise AssertionError(f"connection closed during the handshake: {response!r}")
                response += chunk
        except BaseException:
            sock.close()
            raise
        head, _, rest = response.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        accept = base64.b64encode(hashlib.sha1(key + _WEBSOCKET_GUID).digest()).decode()
        if (
            not lines[0].startswith("HTTP/1.1 101 ")
            or headers.get("sec-websocket-accept") != accept
        ):
            sock.close()
            raise AssertionError(f"no WebSocket upgrade: {head!r}")
        return cls(sock, rest)

    async def send_frame(self, payload: bytes, opcode: int = OPCODE_TEXT) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, mask_frame(payload, opcode))

    async def send_json(self, type: str, payload: Any = None) -> None:
        message: dict[str, Any] = {"type": type}
        if payload is not None:
            message["payload"] = payload
        await self.send_frame(json.dumps(message).encode())

    async def _fill(self, size: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while len(self._buffer) < size:
            chunk = await asyncio.wait_for(
                loop.sock_recv(self.sock, 65536), max(0.01, deadline - time.monotonic())
            )
            if not chunk:
                raise EOFError(f"end of stream with {len(self._buffer)} bytes buffered")
            self._buffer += chunk

    async def read_frame(self, timeout: float = 3.0) -> tuple[int, bytes]:
        """The next server frame as (opcode, payload); EOFError at the end of the stream."""
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.01, deadline - time.monotonic())

        await self._fill(2, left())
        first, second = self._buffer[0], self._buffer[1]
        assert first & 0x80, "a fragmented server frame"
        assert not second & 0x80, "a masked server frame"
        length, offset = second & 0x7F, 2
        if length == 126:
            await self._fill(4, left())
            length, offset = struct.unpack("!H", self._buffer[2:4])[0], 4
        elif length == 127:
            await self._fill(10, left())
            length, offset = struct.unpack("!Q", self._buffer[2:10])[0], 10
        await self._fill(offset + length, left())
        payload = bytes(self._buffer[offset : offset + length])
        del self._buffer[: offset + length]
        return first & 0x0F, payload

    async def recv(self, type: str | None = None, timeout: float = 3.0) -> dict[str, Any]:
        """The next frame, which must be a JSON text frame (of ``type`` when given)."""
        opcode, payload = await self.read_frame(timeout)
        assert opcode == OPCODE_TEXT, (opcode, payload)
        frame: dict[str, Any] = json.loads(payload)
        if type is not None:
            assert frame["type"] == type, f"expected {type}, got {frame}"
        return frame

    async def read_to_end(self, timeout: float = 5.0) -> tuple[bytes, str]:
        """Every byte until the stream ends, and how it ended: ``"eof"`` or ``"reset"``."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        data = bytes(self._buffer)
        self._buffer.clear()
        while True:
            try:
                chunk = await asyncio.wait_for(
                    loop.sock_recv(self.sock, 65536), max(0.01, deadline - time.monotonic())
                )
            except ConnectionResetError:
                return data, "reset"
            if not chunk:
                return data, "eof"
            data += chunk

    def close(self) -> None:
        self.sock.close()


def rss_bytes(pid: int) -> int:
    """The resident set size of a process, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")
