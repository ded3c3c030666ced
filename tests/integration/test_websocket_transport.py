"""The WebSocket transport against a real server: one port for HTTP and WebSocket,
handshakes in odd shapes, fragments, control frames and both close handshakes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.harness.client import Client, Connect
from tests.harness.database import database_locked
from tests.harness.http import http_request
from tests.harness.raw_websocket import (
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    RawWebSocket,
    close_code,
    mask_frame,
)
from tests.harness.server import ServerProcess

UserName = Callable[[str], str]

OPCODE_CONTINUATION = 0x0


@pytest.fixture
async def raw_sockets() -> AsyncIterator[list[RawWebSocket | socket.socket]]:
    opened: list[RawWebSocket | socket.socket] = []
    yield opened
    for item in opened:
        item.close()


async def open_socket(server: ServerProcess) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    return sock


async def read_response(sock: socket.socket, timeout: float = 3.0) -> bytes:
    """Everything the server sends until it closes or goes quiet for ``timeout``."""
    loop = asyncio.get_running_loop()
    data = b""
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
        except (TimeoutError, ConnectionResetError):
            return data
        if not chunk:
            return data
        data += chunk
        if b"\r\n\r\n" in data and b"Content-Length" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            if len(body) >= length:
                return data


async def exchange(server: ServerProcess, request: bytes, piece: int | None = None) -> bytes:
    """Send ``request`` on a new connection (in pieces of ``piece`` bytes), return the answer."""
    sock = await open_socket(server)
    try:
        loop = asyncio.get_running_loop()
        step = piece or len(request)
        for start in range(0, len(request), step):
            await loop.sock_sendall(sock, request[start : start + step])
        return await read_response(sock)
    finally:
        sock.close()


def server_side_open(server_port: int, client_port: int) -> bool:
    """Whether a process still holds a socket from ``server_port`` to ``client_port``.

    Read from /proc/net/tcp: a socket the process has let go of may linger in
    the kernel (FIN-WAIT, its inode 0) while the kernel sends what it had queued.
    """
    wanted = (f"{server_port:04X}", f"{client_port:04X}")
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if (local.rsplit(":", 1)[1], remote.rsplit(":", 1)[1]) == wanted and inode != "0":
                return True
    return False


def upgrade_request(port: int, query: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


RawMember = Callable[[str], Awaitable[tuple[Client, RawWebSocket]]]


@pytest.fixture
def raw_member(
    server: ServerProcess,
    connect: Connect,
    room_id: int,
    user: UserName,
    raw_sockets: list[RawWebSocket | socket.socket],
) -> RawMember:
    """Makes Bob (an ordinary client) and a raw-socket client ``name``, both in the room."""

    async def make(name: str) -> tuple[Client, RawWebSocket]:
        bob = await connect(user("bob"))
        await bob.join(room_id)
        raw = await RawWebSocket.connect(server.port, f"user_id={user(name)}")
        raw_sockets.append(raw)
        await raw.recv("connected")
        await raw.send_json("join_room", {"room_id": room_id})
        await raw.recv("room_users")
        await bob.recv("user_joined")
        return bob, raw

    return make


async def test_http_sent_one_byte_at_a_time_is_still_served(server: ServerProcess) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = await exchange(server, request, piece=1)
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(response.partition(b"\r\n\r\n")[2])["status"] == "ok"


async def test_keep_alive_http_then_an_upgrade_on_the_same_connection_is_refused(
    server: ServerProcess, user: UserName
) -> None:
    sock = await open_socket(server)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await read_response(sock)
        assert first.startswith(b"HTTP/1.1 200 OK")
        await loop.sock_sendall(sock, upgrade_request(server.port, f"user_id={user('late')}"))
        second = await read_response(sock)
    finally:
        sock.close()
    assert second.startswith(b"HTTP/1.1 400 ")
    assert b"first request on its connection" in second


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\n\r\n",
    ],
    ids=["no-upgrade", "bad-key"],
)
async def test_an_invalid_upgrade_gets_400_and_no_connection(
    server: ServerProcess, request_head: bytes
) -> None:
    assert (await exchange(server, request_head)).startswith(b"HTTP/1.1 400 ")


async def test_an_upgrade_with_a_large_cookie_header_is_accepted(
    server: ServerProcess, user: UserName
) -> None:
    sock = await open_socket(server)
    try:
        request = upgrade_request(server.port, f"user_id={user('cookies')}")
        cookies = "; ".join(f"c{i}={'x' * 200}" for i in range(100))  # about 20 KiB
        request = request.replace(b"\r\n\r\n", f"\r\nCookie: {cookies}\r\n\r\n".encode())
        loop = asyncio.get_running_loop()
        for start in range(0, len(request), 4096):  # as a network delivers it: in pieces
            await loop.sock_sendall(sock, request[start : start + 4096])
            await asyncio.sleep(0.01)
        response = b""
        while b'"type":"connected"' not in response:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            assert chunk, response
            response += chunk
    finally:
        sock.close()
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b'"type":"connected"' in rest


@pytest.mark.parametrize("piece", [None, 4096], ids=["one-write", "in-pieces"])
async def test_an_upgrade_head_over_64_kib_is_refused_however_it_arrives(
    server: ServerProcess, user: UserName, piece: int | None
) -> None:
    request = upgrade_request(server.port, f"user_id={user('huge')}")
    cookies = "; ".join(f"c{i}={'x' * 200}" for i in range(350))  # about 70 KiB
    request = request.replace(b"\r\n\r\n", f"\r\nCookie: {cookies}\r\n\r\n".encode())
    assert len(request) > 64 * 1024
    response = await exchange(server, request, piece=piece)
    # aiohttp refuses a header line that long (and answers in HTTP/1.0).
    assert response.split(b"\r\n")[0].endswith(b" 400 Bad Request"), response[:80]


async def test_other_methods_on_ws_get_405(server: ServerProcess) -> None:
    request = b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert (await exchange(server, request)).startswith(b"HTTP/1.1 405 ")


async def test_another_protocol_version_gets_426_naming_13(server: ServerProcess) -> None:
    request = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    )
    response = await exchange(server, request)
    assert response.startswith(b"HTTP/1.1 426 ")
    assert b"Sec-WebSocket-Version: 13\r\n" in response


async def test_the_first_frame_may_come_in_the_same_write_as_the_upgrade(
    server: ServerProcess, connect: Connect, room_id: int, user: UserName
) -> None:
    bob = await connect(user("bob"))
    await bob.join(room_id)
    sock = await open_socket(server)
    try:
        join = json.dumps({"type": "join_room", "payload": {"room_id": room_id}}).encode()
        data = upgrade_request(server.port, f"user_id={user('eager')}") + mask_frame(join)
        await asyncio.get_running_loop().sock_sendall(sock, data)
        joined = await bob.recv("user_joined")
    finally:
        sock.close()
    assert joined["payload"]["user_id"] == user("eager")


async def test_frames_split_anywhere_and_fragmented_messages_arrive_whole(
    raw_member: RawMember, room_id: int, user: UserName
) -> None:
    bob, raw = await raw_member("frag")

    chat = json.dumps({"type": "chat", "payload": {"room_id": room_id, "content": "héllo"}})
    encoded = chat.encode()
    # Three fragments, a ping between them, the whole written a few bytes at a time.
    stream = (
        mask_frame(encoded[:10], OPCODE_TEXT, fin=False)
        + mask_frame(b"are you there", OPCODE_PING)
        + mask_frame(encoded[10:41], OPCODE_CONTINUATION, fin=False)
        + mask_frame(encoded[41:], OPCODE_CONTINUATION)
    )
    loop = asyncio.get_running_loop()
    for start in range(0, len(stream), 7):
        await loop.sock_sendall(raw.sock, stream[start : start + 7])
        await asyncio.sleep(0.001)
    assert await raw.read_frame() == (OPCODE_PONG, b"are you there")
    echoed = await raw.recv("chat")
    assert echoed["payload"]["content"] == "héllo"
    assert (await bob.recv("chat"))["payload"] == echoed["payload"]


async def test_client_close_is_answered_and_the_user_leaves(
    raw_member: RawMember, room_id: int, user: UserName
) -> None:
    bob, raw = await raw_member("leaver")
    await raw.send_frame(struct.pack("!H", 4000) + b"see you", OPCODE_CLOSE)
    opcode, payload = await raw.read_frame()
    assert (opcode, close_code(payload)) == (OPCODE_CLOSE, 1000)
    assert (await raw.read_to_end())[0] == b""  # then the server closes the TCP connection
    left = await bob.recv("user_left")
    assert left["payload"]["user_id"] == user("leaver")


async def test_a_malformed_close_gets_1002_and_the_user_leaves_at_once(
    raw_member: RawMember, room_id: int, user: UserName
) -> None:
    bob, raw = await raw_member("mute")
    # A close frame of the wrong shape: the server closes with 1002 and drops the socket.
    started = time.monotonic()
    await raw.send_frame(b"\x03", OPCODE_CLOSE)
    assert (await bob.recv("user_left"))["payload"]["user_id"] == user("mute")
    data, _ = await raw.read_to_end()
    assert data == b"\x88\x02" + struct.pack("!H", 1002)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "sent",
    [
        b"GET /ws HTTP/1.1\r\nHost: x\r\n",
        b"",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-a: ",
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",  # answered, then idle in keep-alive
    ],
    ids=["half-a-websocket-head", "nothing", "half-an-http-head", "idle-keep-alive"],
)
async def test_a_connection_without_a_request_head_is_dropped_after_the_head_timeout(
    tmp_path: Path, sent: bytes
) -> None:
    server = ServerProcess(tmp_path / "roomcast.db", "--head-timeout", "1").start()
    try:
        sock = await open_socket(server)
        try:
            loop = asyncio.get_running_loop()
            if sent:
                await loop.sock_sendall(sock, sent)  # and no more
            started = time.monotonic()
            data = await read_response(sock, timeout=6)
            if sent.endswith(b"\r\n\r\n"):
                assert data.startswith(b"HTTP/1.1 200 OK"), data
                data = await read_response(sock, timeout=6)
            assert data == b""
            assert time.monotonic() - started < 5
        finally:
            sock.close()
        client = await Client.connect(server.ws_url, "after")  # the server still serves
        await client.close()
    finally:
        server.stop()


async def test_a_request_body_that_does_not_arrive_in_time_gets_408(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "roomcast.db", "--body-timeout", "1").start()
    try:
        sock = await open_socket(server)
        try:
            head = (
                b"POST /api/rooms?user_id=slow HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            )
            await asyncio.get_running_loop().sock_sendall(sock, head + b'{"na')
            data = await read_response(sock, timeout=6)
            assert data.startswith(b"HTTP/1.1 408 "), data
            assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
        finally:
            sock.close()
        status, _, rooms = await http_request("GET", f"{server.http}/api/rooms")
        assert status == 200 and rooms["rooms"] == []  # nothing was created
    finally:
        server.stop()


async def test_a_close_during_a_request_in_flight_still_reads_the_clients_answer(
    tmp_path: Path, raw_sockets: list[RawWebSocket | socket.socket]
) -> None:
    """Reading is paused while a join waits for the database; the server's close
    (here: shutdown) must still see the client's close frame once the join is done."""
    server = ServerProcess(tmp_path / "roomcast.db").start()
    try:
        raw = await RawWebSocket.connect(server.port, "user_id=busy")
        raw_sockets.append(raw)
        await raw.recv("connected")
        async with database_locked(server, rooms=True):
            await raw.send_json("join_room", {"room_id": 5})  # a new room: waits for the lock
            await asyncio.sleep(0.3)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            opcode, payload = await raw.read_frame()
            assert (opcode, close_code(payload)) == (OPCODE_CLOSE, 1001)
            await raw.send_frame(struct.pack("!H", 1001), OPCODE_CLOSE)
            await asyncio.sleep(0.3)
        released = time.monotonic()
        _, ending = await raw.read_to_end(timeout=8)
        assert ending == "eof"  # closed cleanly, not dropped by the close timeout
        assert time.monotonic() - released < 3
    finally:
        assert server.stop() == 0


async def test_a_client_that_closes_but_stops_reading_is_dropped(
    tmp_path: Path, raw_sockets: list[RawWebSocket | socket.socket]
) -> None:
    """Its close frame is answered, but the answer and what is queued before it
    cannot be written to a client that reads nothing: the socket is dropped."""
    # Room for more unsent bytes than the kernel's buffers take, so some stay in ours.
    server = ServerProcess(
        tmp_path / "roomcast.db",
        "--rate-limits", "off",
        "--max-send-buffer", str(32 << 20),
        "--max-content-chars", "60000",
    ).start()  # fmt: skip
    try:
        stuck = await RawWebSocket.connect(server.port, "user_id=stuck", rcvbuf=4096)
        raw_sockets.append(stuck)
        await stuck.recv("connected")
        await stuck.send_json("join_room", {"room_id": 9})
        await stuck.recv("room_users")
        talker = await Client.connect(server.ws_url, "talker")
        try:
            await talker.join(9)
            for _ in range(140):  # 8.4 MB: more than the kernel buffers of both ends hold
                await talker.send("chat", {"room_id": 9, "content": "x" * 60000})
            await talker.recv_many(140, timeout=10)
        finally:
            await talker.close()
        await stuck.send_frame(struct.pack("!H", 1000), OPCODE_CLOSE)
        client_port = stuck.sock.getsockname()[1]
        assert server_side_open(server.port, client_port)
        await asyncio.sleep(6.5)  # past the server's 5 s close timeout, reading nothing
        assert not server_side_open(server.port, client_port)
    finally:
        server.stop()


async def test_a_client_cut_by_the_server_that_never_answers_is_dropped(
    tmp_path: Path, raw_sockets: list[RawWebSocket | socket.socket]
) -> None:
    """The server's close (here: a flood cut, 1008) releases the user at once;
    the socket itself goes after the 5 s close timeout when the client stays silent."""
    server = ServerProcess(tmp_path / "roomcast.db").start()
    try:
        watcher = await Client.connect(server.ws_url, "watcher")
        try:
            await watcher.join(3)
            flooder = await RawWebSocket.connect(server.port, "user_id=flooder")
            raw_sockets.append(flooder)
            await flooder.recv("connected")
            await flooder.send_json("join_room", {"room_id": 3})
            await flooder.recv("room_users")
            await watcher.recv("user_joined")
            # One write of 200 bad frames: past the limiter's burst and 50 refusals.
            garbage = mask_frame(b"{not json") * 200
            await asyncio.get_running_loop().sock_sendall(flooder.sock, garbage)
            left = await watcher.recv_until("user_left", timeout=5)
            assert left["payload"]["user_id"] == "flooder"
        finally:
            await watcher.close()
        client_port = flooder.sock.getsockname()[1]
        assert server_side_open(server.port, client_port)  # waiting for the answer
        await asyncio.sleep(6.5)  # the flooder reads nothing and answers nothing
        assert not server_side_open(server.port, client_port)
    finally:
        server.stop()
