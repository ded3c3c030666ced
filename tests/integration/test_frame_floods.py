"""Floods of WebSocket frames against a real server: each frame costs bounded work,
control frames are charged to the connection's budget, and a flooder is cut off
without the rest of the server noticing."""

from __future__ import annotations

import asyncio
import re
import struct
import time
from collections.abc import Callable

import pytest

from tests.harness.client import Client, Connect
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


async def frames_until_end(raw: RawWebSocket, timeout: float = 10.0) -> list[tuple[int, bytes]]:
    """Every frame the server sends until the stream ends (close, EOF or reset).

    A flooder's socket usually ends in a reset: the server closes it with the
    flood still unread in its receive buffer, and the kernel then resets the
    connection, discarding the close frame the server wrote before.
    """
    frames: list[tuple[int, bytes]] = []
    while True:
        try:
            frame = await raw.read_frame(timeout)
        except (EOFError, ConnectionResetError):
            return frames
        frames.append(frame)
        if frame[0] == OPCODE_CLOSE:
            return frames


def assert_cut_off(frames: list[tuple[int, bytes]]) -> None:
    """The server ended the connection; if its close frame got through, with 1008."""
    closes = [payload for opcode, payload in frames if opcode == OPCODE_CLOSE]
    assert all(close_code(payload) == 1008 for payload in closes), closes


async def metric(server: ServerProcess, name: str) -> float:
    status, _, body = await http_request("GET", f"{server.http}/metrics")
    assert status == 200
    found = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_burst_of_pings_is_answered_once_not_once_per_ping(
    server: ServerProcess, user: UserName
) -> None:
    """Rate limits off: nothing is refused, yet 100,000 pings in one write get a
    handful of pongs (one per loop turn, for the newest ping), not 100,000."""
    raw = await RawWebSocket.connect(server.port, f"user_id={user('pinger')}")
    try:
        await raw.recv("connected")
        burst = b"".join(mask_frame(b"p", OPCODE_PING) for _ in range(99_999))
        burst += mask_frame(b"last", OPCODE_PING)
        await asyncio.get_running_loop().sock_sendall(raw.sock, burst)
        pongs: list[bytes] = []
        while not pongs or pongs[-1] != b"last":
            opcode, payload = await raw.read_frame(timeout=30)
            assert opcode == OPCODE_PONG, (opcode, payload)
            pongs.append(payload)
        assert len(pongs) <= 100, f"{len(pongs)} pongs for one write of pings"
        await raw.send_json("ping")
        assert (await raw.recv("pong"))["type"] == "pong"
    finally:
        raw.close()


async def test_a_ping_flood_is_cut_off_and_others_are_served(
    limited: ServerProcess, connect: Connect, user: UserName
) -> None:
    floods_before = await metric(limited, "roomcast_flood_disconnects_total")
    bystander = await Client.connect(limited.ws_url, user("bystander"))
    raw = await RawWebSocket.connect(limited.port, f"user_id={user('flooder')}")
    try:
        await raw.recv("connected")
        burst = mask_frame(b"", OPCODE_PING) * 100_000
        await asyncio.get_running_loop().sock_sendall(raw.sock, burst)
        frames = await frames_until_end(raw)
        assert_cut_off(frames)
        # Charged to its budget: only the burst allowance was ever answered.
        assert sum(opcode == OPCODE_PONG for opcode, _ in frames) <= 50
        await bystander.sync()
        assert await metric(limited, "roomcast_flood_disconnects_total") == floods_before + 1
    finally:
        raw.close()
        await bystander.close()


async def test_pings_one_loop_turn_apart_are_charged_each(
    limited: ServerProcess, user: UserName
) -> None:
    """Pings in separate writes get a pong each, until the control budget (a burst
    of 50) is spent: then they go unanswered, and the flood is cut off."""
    raw = await RawWebSocket.connect(limited.port, f"user_id={user('patient')}")
    loop = asyncio.get_running_loop()
    try:
        await raw.recv("connected")
        started = time.monotonic()
        sent = 0
        for n in range(300):
            try:
                await loop.sock_sendall(raw.sock, mask_frame(b"%d" % n, OPCODE_PING))
            except OSError:
                break  # cut off
            sent += 1
            await asyncio.sleep(0.002)
        elapsed = time.monotonic() - started
        frames = await frames_until_end(raw)
        answered = [int(payload) for opcode, payload in frames if opcode == OPCODE_PONG]
        assert answered == sorted(set(answered))  # each for a ping of its own, in order
        # The burst and what refilled meanwhile (10 a second), no more: pings that
        # arrived together share a pong, so there may be fewer.
        assert len(answered) <= 50 + 10 * elapsed + 2, (len(answered), elapsed)
        assert answered[-1] < sent - 1  # the later pings went unanswered ...
        assert_cut_off(frames)  # ... and the flood was cut
    finally:
        raw.close()


async def test_unsolicited_pongs_are_charged_too(limited: ServerProcess, user: UserName) -> None:
    raw = await RawWebSocket.connect(limited.port, f"user_id={user('ponger')}")
    try:
        await raw.recv("connected")
        await asyncio.get_running_loop().sock_sendall(
            raw.sock, mask_frame(b"", OPCODE_PONG) * 10_000
        )
        assert_cut_off(await frames_until_end(raw))
        assert await metric(limited, "roomcast_flood_disconnects_total") >= 1
    finally:
        raw.close()


async def test_a_client_streaming_after_its_close_is_dropped(
    limited: ServerProcess, user: UserName
) -> None:
    """Cut for flooding, it keeps writing pings instead of answering the close:
    the server reads a bounded number of further frames, then drops the socket."""
    raw = await RawWebSocket.connect(limited.port, f"user_id={user('streamer')}")
    loop = asyncio.get_running_loop()
    chunk = mask_frame(b"", OPCODE_PING) * 10_000
    written = 0
    try:
        await raw.recv("connected")
        with pytest.raises(OSError):  # reset or broken pipe once the server let go
            for _ in range(2_000):  # at most 120 MB, far more than is ever read
                await asyncio.wait_for(loop.sock_sendall(raw.sock, chunk), 10)
                written += len(chunk)
        # What the kernel's socket buffers took (a few MB on loopback), not 120 MB.
        assert written < 200 * len(chunk)
    finally:
        raw.close()
    status, _, _ = await http_request("GET", f"{limited.http}/health")
    assert status == 200


async def test_text_floods_after_the_close_cost_bounded_work(
    limited: ServerProcess, user: UserName
) -> None:
    raw = await RawWebSocket.connect(limited.port, f"user_id={user('chatter')}")
    loop = asyncio.get_running_loop()
    garbage = mask_frame(b"{", OPCODE_TEXT) * 5_000
    written = 0
    try:
        await raw.recv("connected")
        with pytest.raises(OSError):
            for _ in range(2_000):  # 70 MB, far more than is ever read
                await asyncio.wait_for(loop.sock_sendall(raw.sock, garbage), 10)
                written += len(garbage)
        # What the kernel's socket buffers took (a few MB on loopback), not 70 MB.
        assert written < 200 * len(garbage)
    finally:
        raw.close()
    status, _, _ = await http_request("GET", f"{limited.http}/health")
    assert status == 200


async def test_fragment_floods_are_charged_per_message(
    limited: ServerProcess, user: UserName
) -> None:
    """Messages of 1,024 empty fragments: each costs O(1) a fragment and one token a
    message, so the flood is cut like any other."""
    raw = await RawWebSocket.connect(limited.port, f"user_id={user('fragments')}")
    message = (
        mask_frame(b"", OPCODE_TEXT, fin=False)
        + mask_frame(b"", OPCODE_CONTINUATION, fin=False) * 1022
        + mask_frame(b"x", OPCODE_CONTINUATION)
    )
    try:
        await raw.recv("connected")
        await asyncio.get_running_loop().sock_sendall(raw.sock, message * 200)
        frames = await frames_until_end(raw)
        assert_cut_off(frames)
        errors = [payload for opcode, payload in frames if opcode == OPCODE_TEXT]
        assert errors and all(b'"error"' in payload for payload in errors)
    finally:
        raw.close()


async def test_a_close_frame_ends_reading(server: ServerProcess, user: UserName) -> None:
    """Whatever follows a client's close frame is not read (nor answered)."""
    raw = await RawWebSocket.connect(server.port, f"user_id={user('closer')}")
    try:
        await raw.recv("connected")
        data = mask_frame(struct.pack("!H", 1000), OPCODE_CLOSE)
        data += mask_frame(b"", OPCODE_PING) * 10_000
        await asyncio.get_running_loop().sock_sendall(raw.sock, data)
        frames = await frames_until_end(raw)
        assert [opcode for opcode, _ in frames] == [OPCODE_CLOSE]
    finally:
        raw.close()
