"""Random and malformed frames against a running server (property-based).

For every generated sequence of frames: the server answers each bad one with
an ``error`` of a documented code (never ``internal``, never a traceback), the
connection stays usable, and a user in a private room the fuzzing user cannot
enter hears nothing at all. The fuzzing user is never shown as anyone else.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from roomcast.protocol import CLIENT_TYPES, ErrorCode
from tests.harness.client import Client
from tests.harness.http import http_json
from tests.harness.raw_websocket import (
    OPCODE_CLOSE,
    OPCODE_PONG,
    OPCODE_TEXT,
    RawWebSocket,
    close_code,
    mask_frame,
)
from tests.harness.server import ServerProcess

CODES = {code.value for code in ErrorCode} - {"internal"}
FIELDS = [
    "room_id",
    "content",
    "type",
    "message_id",
    "emoji",
    "is_typing",
    "status",
    "user_id",
    "from_user_id",
    "to_user_id",
    "data",
    "call_id",
    "since",
    "client_msg_id",
    "media",
    "reason",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
small_ids = st.integers(min_value=-2, max_value=5) | st.sampled_from([2**63, 2**64, 1.5, "1"])
payloads = st.dictionaries(
    st.sampled_from(FIELDS),
    json_values | small_ids | st.sampled_from(["text", "offer", "answer", "online", "👍", ""]),
    max_size=6,
)
envelopes = st.builds(
    lambda type_, payload, extra: json.dumps({"type": type_, "payload": payload, **extra}),
    st.sampled_from(sorted(CLIENT_TYPES)) | st.text(max_size=12),
    payloads | json_values,
    st.dictionaries(st.sampled_from(["timestamp", "id", "payload2"]), json_values, max_size=2),
)
frames = st.lists(
    envelopes
    | st.text(max_size=60)
    | json_values.map(json.dumps)
    | st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    min_size=1,
    max_size=12,
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database: Path = tmp_path_factory.mktemp("fuzz") / "roomcast.db"
    server = ServerProcess(database, "--rate-limits", "off").start()
    yield server
    server.stop()


def check_frame(frame: dict[str, Any], me: str) -> None:
    assert set(frame) == {"type", "payload", "timestamp"}, frame
    payload = frame["payload"]
    if frame["type"] == "error":
        assert payload["code"] in CODES, payload
        assert "Traceback" not in payload["message"]
    for key in ("user_id", "from_user_id"):
        # Everything this lone user can cause is about this user.
        if key in payload and frame["type"] not in ("connected",):
            assert payload[key] == me, frame


async def private_watcher(server: ServerProcess) -> Client:
    """A user alone in a new private room the fuzzing user cannot enter."""
    status, room = await http_json(
        "POST",
        f"{server.http}/api/rooms?user_id=watcher",
        {"name": "watchers only", "private": True, "members": []},
    )
    assert status == 201
    watcher = await Client.connect(server.ws_url, "watcher")
    await watcher.join(room["id"])
    return watcher


async def run_example(server: ServerProcess, sequence: list[str]) -> None:
    watcher = await private_watcher(server)
    fuzzer = await Client.connect(server.ws_url, "fuzzer")
    try:
        for text in sequence:
            await fuzzer.send_raw(text)
        await fuzzer.send("ping")
        while True:  # everything up to the pong answers the frames above
            frame = await fuzzer.next(timeout=5)
            check_frame(frame, "fuzzer")
            if frame["type"] == "pong":
                break
        await watcher.sync()  # the watcher got nothing but its own pong
        assert not fuzzer.ws.closed
    finally:
        await fuzzer.close()
        await watcher.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=frames)
def test_random_frames_get_documented_errors_and_isolation_holds(
    fuzz_server: ServerProcess, sequence: list[str]
) -> None:
    asyncio.run(run_example(fuzz_server, sequence))


# -- the same at the WebSocket frame level ----------------------------------------------

WIRE_CLOSE_CODES = {1000, 1002, 1007, 1009}

# Mostly well-formed, so that a sequence gets past its first frame: each broken
# property (flags, opcode, mask, fragments, UTF-8) is rare on its own.
wire_frames = st.builds(
    lambda payload, opcode, fin, rsv, masked: mask_frame(
        payload, opcode, fin, rsv=rsv, masked=masked
    ),
    envelopes.map(str.encode)
    | st.binary(max_size=140)
    | st.sampled_from([b"\xff\xfe", "é".encode()[:1], struct.pack("!H", 1000), b"\x03"]),
    st.sampled_from([OPCODE_TEXT] * 12 + [0x0, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB]),
    st.sampled_from([True] * 7 + [False]),
    st.sampled_from([0] * 15 + [0x40]),
    st.sampled_from([True] * 15 + [False]),
)
wire_sequences = st.tuples(
    st.lists(wire_frames, min_size=1, max_size=6), st.integers(min_value=1, max_value=64)
)


async def run_wire_example(server: ServerProcess, frames: list[bytes], chunk: int) -> None:
    watcher = await private_watcher(server)
    raw = await RawWebSocket.connect(server.port, "user_id=fuzzer")
    try:
        check_frame(await raw.recv("connected"), "fuzzer")
        stream = b"".join(frames) + mask_frame(json.dumps({"type": "ping"}).encode())
        loop = asyncio.get_running_loop()
        try:
            for start in range(0, len(stream), chunk):
                await loop.sock_sendall(raw.sock, stream[start : start + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed after a violation: what it sent says why
        # Either the connection survived and answers the ping, or it was closed
        # with one of the documented codes and then ended.
        while True:
            opcode, payload = await raw.read_frame(timeout=5)
            if opcode == OPCODE_CLOSE:
                assert close_code(payload) in WIRE_CLOSE_CODES, payload
                event(f"closed with {close_code(payload)}")
                _, ending = await raw.read_to_end()
                assert ending in ("eof", "reset")
                break
            if opcode == OPCODE_TEXT:
                frame = json.loads(payload)
                check_frame(frame, "fuzzer")
                if frame["type"] == "pong":
                    event("answered the ping")
                    break
            else:
                assert opcode == OPCODE_PONG, (opcode, payload)
        await watcher.sync()  # the watcher got nothing but its own pong
    finally:
        raw.close()
        await watcher.close()


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(example=wire_sequences)
def test_random_wire_frames_end_in_a_pong_or_a_documented_close(
    fuzz_server: ServerProcess, example: tuple[list[bytes], int]
) -> None:
    frames, chunk = example
    asyncio.run(run_wire_example(fuzz_server, frames, chunk))


def test_server_is_healthy_after_fuzzing(fuzz_server: ServerProcess) -> None:
    async def check() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{fuzz_server.http}/health") as response,
        ):
            assert response.status == 200
        assert "Traceback" not in fuzz_server.log()

    asyncio.run(check())
