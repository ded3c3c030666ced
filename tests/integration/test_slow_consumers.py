"""A client that stops reading is cut; the room still gets everything, without stalling.

Refusals are checked for what did not happen too, as :mod:`tests.harness.pool` says.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from typing import Any

from tests.harness.chat import (
    send_chat,
)
from tests.harness.client import Client
from tests.harness.http import room_user_ids
from tests.harness.pool import Pool, members
from tests.harness.raw_websocket import OPCODE_TEXT
from tests.harness.server import rss_bytes
from tests.harness.timing import eventually_equal

UserName = Callable[[str], str]
NewRoom = Callable[[], int]


async def test_a_client_that_stops_reading_is_cut_and_the_room_gets_everything(
    pool: Pool,
) -> None:
    server = pool.server("--max-send-buffer", "65536", "--rate-limits", "off")
    assert server.proc is not None
    stuck = await pool.raw(server, "stuck", rcvbuf=4096)
    connected = (await stuck.recv("connected"))["payload"]
    await stuck.send_json("join_room", {"room_id": 1})  # and never read again
    await eventually_equal(lambda: room_user_ids(server, 1), ["stuck"])
    sender, watcher = await members(pool, server, 1, "sender", "watcher")
    rss_before = rss_bytes(server.proc.pid)

    # 2000 messages of about 16 KB (3990 four-byte characters): 32 MB to every member.
    # The kernel takes a few MB for the stuck socket; without the cut the server would
    # hold the rest. Sending waits for the readers so that they never lag behind.
    count, window, body = 2000, 8, "\U0001f600" * 3990
    got: dict[str, list[dict[str, Any]]] = {"sender": [], "watcher": []}
    others: list[dict[str, Any]] = []
    progress = asyncio.Event()

    async def read_all(client: Client, name: str) -> None:
        while len(got[name]) < count:
            frame = await client.next(timeout=10)
            if frame["type"] == "chat":
                got[name].append(frame["payload"])
                progress.set()
            else:
                others.append(frame)

    readers = [
        asyncio.create_task(read_all(sender, "sender")),
        asyncio.create_task(read_all(watcher, "watcher")),
    ]
    try:
        for i in range(count):
            while min(len(received) for received in got.values()) < i - window:
                progress.clear()
                await asyncio.wait_for(progress.wait(), 10)
            await send_chat(sender, 1, f"{i:05d}{body}")
        await asyncio.gather(*readers)
    finally:
        for reader in readers:
            reader.cancel()
    rss_after = rss_bytes(server.proc.pid)

    expected = [f"{i:05d}{body}" for i in range(count)]
    for name in ("sender", "watcher"):
        assert [m["content"] for m in got[name]] == expected, name
    assert got["sender"] == got["watcher"]
    # The server did not keep what the stuck client could not take (half the flood).
    assert rss_after - rss_before < 16 * 2**20, (rss_before, rss_after)
    assert [f["payload"] for f in others if f["type"] == "user_left"] == [
        {"room_id": 1, "user_id": "stuck"}
    ] * 2
    assert f"event=slow consumer conn={connected['connection_id']}" in server.log()
    for client in (sender, watcher):  # still connected
        await client.sync()

    # The stuck socket ends (EOF or reset) after a prefix of what the room got.
    data, end = await stuck.read_to_end(timeout=5)
    assert end in ("eof", "reset")
    frames = parse_frames(data)
    assert [json.loads(f)["type"] for f in frames[:3]] == ["room_users", *["user_joined"] * 2]
    contents = [json.loads(f)["payload"]["content"] for f in frames[3:]]
    assert 0 < len(contents) < count
    assert contents == expected[: len(contents)]


def parse_frames(data: bytes) -> list[bytes]:
    """The payloads of the complete unmasked text frames at the start of ``data``."""
    payloads: list[bytes] = []
    offset = 0
    while offset + 2 <= len(data):
        first, length = data[offset], data[offset + 1] & 0x7F
        header = 2
        if length == 126:
            header, length = 4, struct.unpack("!H", data[offset + 2 : offset + 4])[0]
        elif length == 127:
            header, length = 10, struct.unpack("!Q", data[offset + 2 : offset + 10])[0]
        if offset + header + length > len(data):
            break  # cut in the middle
        assert first == 0x80 | OPCODE_TEXT, first
        payloads.append(data[offset + header : offset + header + length])
        offset += header + length
    return payloads
