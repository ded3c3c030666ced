"""A WebSocket client on a plain socket: frames written and read by hand (RFC 6455)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import time
from typing import Any

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
        """The next frame, which must be a JSON text frame (of ``type`` when given).

        ``unread`` counts, which follow ``connected`` for every known user, are
        passed over unless asked for: these tests are about the frames around them.
        ``connected`` is read with the counts that follow it, so that what the
        test reads next is what comes after both.
        """
        while True:
            opcode, payload = await self.read_frame(timeout)
            assert opcode == OPCODE_TEXT, (opcode, payload)
            frame: dict[str, Any] = json.loads(payload)
            if frame["type"] != "unread" or type == "unread":
                break
        if frame["type"] == "connected" and frame["payload"]["user_id"] is not None:
            await self.recv("unread", timeout)
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
