"""A text frame of invalid UTF-8 closes its connection with 1007; the others carry on.

Refusals are checked for what did not happen too, as :mod:`tests.harness.pool` says.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from tests.harness.http import history, stored
from tests.harness.pool import Pool, members
from tests.harness.raw_websocket import OPCODE_CLOSE, OPCODE_TEXT
from tests.harness.server import ServerProcess

UserName = Callable[[str], str]
NewRoom = Callable[[], int]


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80"],
    ids=["ff", "truncated", "overlong", "surrogate"],
)
async def test_invalid_utf8_text_frame_closes_with_1007_and_others_carry_on(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName, bad: bytes
) -> None:
    bob, carol = await members(pool, server, room_id, user("bob"), user("carol"))
    raw = await pool.raw(server, user("raw"))
    await raw.recv("connected")
    await raw.send_json("join_room", {"room_id": room_id})
    assert (await raw.recv("room_users"))["payload"]["room_id"] == room_id
    for member in (bob, carol):
        assert (await member.recv("user_joined"))["payload"]["user_id"] == user("raw")

    frame = b'{"type": "chat", "payload": {"room_id": %d, "content": "x' % room_id
    await raw.send_frame(frame + bad + b'"}}', OPCODE_TEXT)
    # aiohttp answers with a close frame carrying 1007 and no reason, then drops the TCP
    # connection without waiting for the client's close frame.
    assert await raw.read_frame() == (OPCODE_CLOSE, struct.pack("!H", 1007))
    assert await raw.read_to_end() == (b"", "eof")

    gone = {"room_id": room_id, "user_id": user("raw")}
    for member in (bob, carol):
        assert (await member.recv("user_left"))["payload"] == gone
        assert (await member.recv("presence"))["payload"] == {
            "user_id": user("raw"),
            "status": "offline",
        }
    message = await bob.chat(room_id, "still fine")
    assert (await carol.recv("chat"))["payload"] == message
    assert await history(server, room_id) == [stored(message)]
