"""The front door and the connection protocol against fake transports: the paths
a real client can hardly hit on purpose (shutdown races, writes to a closing socket)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

from roomcast.adapters.local_broker import LocalBroker
from roomcast.adapters.sqlite_store import SQLiteStore
from roomcast.auth import Authenticator
from roomcast.clock import wall_ms
from roomcast.config import Settings
from roomcast.features import default_features
from roomcast.metrics import Metrics
from roomcast.node.node import Node
from roomcast.transport.admission import Admission
from roomcast.transport.fanout import FanOut
from roomcast.transport.frames import OPCODE_PING
from roomcast.transport.front_door import FrontDoor, Gate
from roomcast.transport.websocket import WebSocketConnection, WebSocketEndpoint
from tests.harness.raw_websocket import mask_frame


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 5555) if name == "peername" else None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class RecordingHttp(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data


def endpoint(tmp_path: Path) -> WebSocketEndpoint:
    settings = Settings(database=f"sqlite:///{tmp_path}/unit.db")
    store = SQLiteStore(settings.database, wall_ms)  # never started: nothing here writes
    fanout = FanOut(settings.max_send_buffer)
    node = Node(store, LocalBroker(), fanout, settings, default_features)
    admission = Admission(capacity=10, per_address=10, refusing=2)
    return WebSocketEndpoint(node, fanout, Authenticator(None), settings, admission)


def gate(tmp_path: Path) -> Gate:
    ws = endpoint(tmp_path)
    return Gate(ws.admission, ws, head_timeout=10, write_stall_timeout=45, metrics=Metrics())


def as_transport(fake: FakeTransport) -> asyncio.Transport:
    return cast(asyncio.Transport, fake)


async def test_other_requests_go_to_http_with_every_byte_read(tmp_path: Path) -> None:
    http = RecordingHttp()
    door = FrontDoor(gate(tmp_path), lambda: http)
    fake = FakeTransport()
    door.connection_made(as_transport(fake))
    door.data_received(b"GE")  # could still be GET /ws
    assert http.transport is None
    door.data_received(b"T /health HTTP/1.1\r\n")
    assert http.transport is fake
    assert http.received == b"GET /health HTTP/1.1\r\n"
    door.data_received(b"Host: x\r\n\r\n")  # the door stays in between, counting
    assert http.received == b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    assert fake.protocol is None


async def test_every_connection_counts_until_it_closes(tmp_path: Path) -> None:
    doors = gate(tmp_path)
    admission = doors.admission
    door = FrontDoor(doors, RecordingHttp)
    door.connection_made(as_transport(FakeTransport()))
    assert admission.open == 1
    door.data_received(b"GET /health HTTP/1.1\r\n")
    assert admission.open == 1  # served by HTTP now, still counted
    door.connection_lost(None)
    assert admission.open == 0
    door.connection_lost(None)  # a second report changes nothing
    assert admission.open == 0


async def test_no_connection_is_taken_once_shutdown_began(tmp_path: Path) -> None:
    doors = gate(tmp_path)
    doors.close()
    http = RecordingHttp()
    door = FrontDoor(doors, lambda: http)
    fake = FakeTransport()
    door.connection_made(as_transport(fake))  # accepted just before the listener closed
    assert fake.closing and fake.protocol is None
    assert not doors.undecided and doors.admission.open == 0


async def test_shutdown_closes_connections_still_deciding(tmp_path: Path) -> None:
    doors = gate(tmp_path)
    door = FrontDoor(doors, RecordingHttp)
    fake = FakeTransport()
    door.connection_made(as_transport(fake))
    door.data_received(b"GET /ws HTTP/1.1\r\n")  # head not complete yet
    doors.close()
    assert fake.closing and fake.protocol is None


async def test_a_ping_is_answered_unless_the_socket_is_closing(tmp_path: Path) -> None:
    ws = endpoint(tmp_path)
    fake = FakeTransport()
    connection = WebSocketConnection(ws, as_transport(fake), "127.0.0.1")
    connection.start({"user_id": "alice"})
    await asyncio.sleep(0)  # the connected frame goes out
    fake.writes.clear()
    connection.data_received(mask_frame(b"1", OPCODE_PING))
    await asyncio.sleep(0)
    assert fake.writes == [b"\x8a\x011"]
    fake.closing = True
    connection.data_received(mask_frame(b"2", OPCODE_PING))
    await asyncio.sleep(0)
    assert fake.writes == [b"\x8a\x011"]  # nothing written to a closing socket


async def test_a_burst_of_pings_is_answered_by_one_pong_for_the_newest(tmp_path: Path) -> None:
    ws = endpoint(tmp_path)
    fake = FakeTransport()
    connection = WebSocketConnection(ws, as_transport(fake), "127.0.0.1")
    connection.start({"user_id": "alice"})
    await asyncio.sleep(0)
    fake.writes.clear()
    connection.data_received(b"".join(mask_frame(b"%d" % i, OPCODE_PING) for i in range(40)))
    await asyncio.sleep(0)
    assert fake.writes == [b"\x8a\x0239"]


class UnreadTransport(FakeTransport):
    """A socket whose peer stopped reading: output stays buffered, close() waits."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def get_write_buffer_size(self) -> int:
        return 1000

    def close(self) -> None:
        self.calls.append("close")

    def abort(self) -> None:
        self.calls.append("abort")


async def test_a_head_timeout_with_a_response_still_unread_ends_in_an_abort(
    tmp_path: Path,
) -> None:
    ws = endpoint(tmp_path)
    doors = Gate(ws.admission, ws, head_timeout=0.01, write_stall_timeout=0.05, metrics=Metrics())
    door = FrontDoor(doors, RecordingHttp)
    fake = UnreadTransport()
    door.connection_made(as_transport(fake))
    await asyncio.sleep(0.03)
    assert fake.calls == ["close"]  # waits for what is buffered ...
    await asyncio.sleep(0.1)
    assert fake.calls == ["close", "abort"]  # ... but not forever
