"""Every TCP connection counts, whatever it asks for: HTTP requests that never finish
their head cannot take the server's descriptors, and a full server still answers.

Attackers and legitimate clients come from different loopback addresses
(127.0.0.0/8 is all loopback on Linux), as they would from different hosts.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness.client import Client
from tests.harness.http import http_request
from tests.harness.raw_websocket import RawWebSocket, close_code
from tests.harness.server import ServerProcess

PARTIAL_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nX-a: "
FULL_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def connect_from(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((address, 0))
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 5)
    return sock


async def answer(sock: socket.socket, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request``, read until the server closes the connection."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, request)
    data = b""
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


async def metric(server: ServerProcess, name: str) -> float:
    status, _, body = await http_request("GET", f"{server.http}/metrics")
    assert status == 200
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The unmasked frames a server wrote (each under 64 KiB)."""
    frames = []
    while data:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        frames.append((data[0] & 0x0F, data[start : start + length]))
        data = data[start + length :]
    return frames


@pytest.fixture
async def held() -> AsyncIterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


async def hold_partial_heads(
    port: int, addresses: list[str], each: int, held: list[socket.socket]
) -> None:
    """Open ``each`` connections from every address, each sending half a request head."""
    loop = asyncio.get_running_loop()
    for address in addresses:
        for _ in range(each):
            try:
                sock = await connect_from(address, port)
                await loop.sock_sendall(sock, PARTIAL_HEAD)
            except (OSError, TimeoutError):
                continue  # refused: that is the point
            held.append(sock)


async def test_http_connections_count_against_the_per_address_limit(
    tmp_path: Path, held: list[socket.socket]
) -> None:
    server = ServerProcess(tmp_path / "roomcast.db", "--max-connections-per-ip", "20").start()
    try:
        await hold_partial_heads(server.port, ["127.0.0.3"], 20, held)
        over = await connect_from("127.0.0.3", server.port)
        response = await answer(over, FULL_HEAD)
        over.close()
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429 "), response
        assert json.loads(body)["error"]["code"] == "rate_limited"
        # A WebSocket from that address is told why in its own protocol.
        raw = await RawWebSocket.connect(server.port, "user_id=crowded")
        raw.close()  # from 127.0.0.1: unaffected
        sock = await connect_from("127.0.0.3", server.port)
        upgrade = (
            f"GET /ws?user_id=crowded HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        refused = await answer(sock, upgrade)
        sock.close()
        head, _, frames = refused.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), refused
        (text_opcode, error), (close_opcode, close) = server_frames(frames)
        assert text_opcode == 0x1 and close_opcode == 0x8
        assert json.loads(error)["payload"] == {
            "code": "rate_limited",
            "message": "too many connections from this address",
        }
        assert close_code(close) == 1008
        # Another address is served as usual.
        client = await Client.connect(server.ws_url, "elsewhere")
        await client.sync()
        await client.close()
        assert await metric(server, 'roomcast_connections_refused_total{reason="address"}') == 2
    finally:
        server.stop()


async def test_a_server_holding_partial_heads_up_to_its_descriptor_limit_still_serves(
    tmp_path: Path, held: list[socket.socket]
) -> None:
    """500 half-sent heads from ten addresses against a process allowed 400
    descriptors: the server stays within its capacity, keeps descriptors to
    refuse with, and makes room for newcomers by dropping the oldest waiters."""
    server = ServerProcess(
        tmp_path / "roomcast.db", "--reserved-descriptors", "64", open_files=400
    ).start()
    try:
        addresses = [f"127.0.1.{i}" for i in range(1, 11)]
        await hold_partial_heads(server.port, addresses, 50, held)
        await asyncio.sleep(1.5)  # old enough to be displaced
        for attempt in range(20):
            client = await asyncio.wait_for(Client.connect(server.ws_url, f"legit-{attempt}"), 10)
            await client.send("join_room", {"room_id": 7})
            await client.recv("room_users")
            await client.close()
            sock = await connect_from("127.0.0.2", server.port)
            response = await answer(sock, FULL_HEAD)
            sock.close()
            assert response.startswith(b"HTTP/1.1 200 OK"), response
        fds = len(list(Path(f"/proc/{server.proc.pid}/fd").iterdir()))  # type: ignore[union-attr]
        assert fds < 400
        # Each attacker connection past the capacity (400 - 64) was refused (told
        # why, or dropped at once with 32 refusals under way) or displaced an
        # older one; the first legitimate newcomer displaced one too.
        displaced = await metric(server, "roomcast_connections_displaced_total")
        full = await metric(server, 'roomcast_connections_refused_total{reason="full"}')
        dropped = await metric(server, 'roomcast_connections_refused_total{reason="dropped"}')
        assert displaced >= 1
        assert displaced + full + dropped >= 500 - 336
    finally:
        server.stop()


async def test_a_full_server_answers_http_with_503(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "roomcast.db", "--max-connections", "3").start()
    clients = [await Client.connect(server.ws_url, name) for name in ("a", "b", "c")]
    try:
        sock = await connect_from("127.0.0.4", server.port)
        response = await answer(sock, FULL_HEAD)
        sock.close()
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), response
        assert b"Retry-After: 1" in head
        assert "full" in json.loads(body)["error"]["message"]
        for client in clients:  # the refusal took nothing from the others
            await client.sync()
    finally:
        for client in clients:
            await client.close()
        server.stop()


async def test_a_refused_websocket_counts_until_its_socket_closes(
    tmp_path: Path, held: list[socket.socket]
) -> None:
    """Refused (a bad token) and told so with a close frame, a client that never
    answers the close still holds its descriptor until the close timeout: it
    counts against its address until then."""
    server = ServerProcess(
        tmp_path / "roomcast.db",
        "--auth-secret", "0123456789abcdef0123456789abcdef",
        "--max-connections-per-ip", "5",
    ).start()  # fmt: skip
    try:
        upgrade = (
            f"GET /ws?token=forged HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        loop = asyncio.get_running_loop()
        for _ in range(5):
            sock = await connect_from("127.0.0.5", server.port)
            held.append(sock)
            await loop.sock_sendall(sock, upgrade)
            refused = b""
            while b"\x88" not in refused.partition(b"\r\n\r\n")[2]:  # up to the close frame
                refused += await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            assert b"unauthenticated" in refused
        over = await connect_from("127.0.0.5", server.port)
        response = await answer(over, FULL_HEAD)
        over.close()
        assert response.startswith(b"HTTP/1.1 429 "), response
    finally:
        server.stop()
