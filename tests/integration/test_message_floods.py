"""A client flooding the server with frames is cut with 1008, and the room carries on.

Refusals are checked for what did not happen too, as :mod:`tests.harness.pool` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.harness.chat import (
    assert_rate_limited,
    chats_until,
    send_chat,
)
from tests.harness.client import Client
from tests.harness.http import history, stored
from tests.harness.pool import Pool, members
from tests.harness.raw_websocket import mask_frame
from tests.harness.server import ServerProcess

UserName = Callable[[str], str]
NewRoom = Callable[[], int]


async def flood_in_step(
    flooder: Client, send_one: Callable[[int], Awaitable[None]], limit: int = 300
) -> tuple[list[dict[str, Any]], Any, float]:
    """Send one frame at a time, each after the answer to the one before, until the close.

    The answer to a frame is an ``error`` or (a stored chat) its own echo; other frames
    on the way are skipped. Returns the answers, the CLOSE message and the time taken.
    """
    own = flooder.connected["user_id"]
    started = time.monotonic()
    answers: list[dict[str, Any]] = []
    for i in range(limit):
        with contextlib.suppress(ConnectionResetError):  # the server closed: read its close
            await send_one(i)
        while True:
            message = await asyncio.wait_for(flooder.ws.receive(), 5)
            if message.type is not aiohttp.WSMsgType.TEXT:
                assert message.type is aiohttp.WSMsgType.CLOSE, message
                return answers, message, time.monotonic() - started
            frame = json.loads(message.data)
            if frame["type"] == "error" or frame["payload"].get("user_id") == own:
                answers.append(frame)
                break
    raise AssertionError(f"still connected after {limit} frames past the limit")


@pytest.mark.parametrize("flood", ["garbage", "binary", "chat"])
async def test_flooding_client_is_cut_with_1008_and_the_room_carries_on(
    limited: ServerProcess, pool: Pool, new_room: NewRoom, user: UserName, flood: str
) -> None:
    room_id = new_room()
    bob, carol, flooder = await members(
        pool, limited, room_id, user("bob"), user("carol"), user("flooder")
    )
    await send_chat(bob, room_id, "before")

    async def send_one(i: int) -> None:
        if flood == "garbage":
            await flooder.send_raw("{not json")
        elif flood == "binary":
            await flooder.send_raw(b"\x00\x01")
        else:
            await send_chat(flooder, room_id, f"flood {i}")
        if i == 40:
            await send_chat(bob, room_id, "during")

    answers, close, elapsed = await flood_in_step(flooder, send_one)
    assert (close.data, close.extra) == (1008, "flooding")
    refused = [a["payload"] for a in answers if a["payload"].get("code") == "rate_limited"]
    passed = [a for a in answers if a["payload"].get("code") != "rate_limited"]
    if flood in ("garbage", "binary"):
        # The first 50 (and what 10/s refilled meanwhile) pass the limiter: refused as such.
        assert 50 <= len(passed) <= 50 + int(10 * elapsed), (len(passed), elapsed)
        expected = "invalid_json" if flood == "garbage" else "invalid_message"
        assert {a["payload"]["code"] for a in passed} == {expected}
        for error in refused:
            assert_rate_limited(error, None, 100)
    else:
        # 30 at once (and what 5/s refilled meanwhile) are stored and come back.
        assert 30 <= len(passed) <= 30 + int(5 * elapsed), (len(passed), elapsed)
        assert {a["type"] for a in passed} == {"chat"}
        for error in refused:
            assert_rate_limited(error, "chat", 200)
    # 50 refusals are forgiven (one more a second); the next one cuts the connection
    # at once, without a reply: the close frame (1008) says why.
    assert 50 <= len(refused) <= 50 + int(elapsed), (len(refused), elapsed)
    assert f"event=flood conn={flooder.connection_id} " in limited.log()

    await send_chat(bob, room_id, "after")
    flooded = [a["payload"] for a in passed if a["type"] == "chat"]
    seen = []
    for member in (bob, carol):
        chats, others = await chats_until(member, "after")
        from_bob = [chat["content"] for chat in chats if chat["user_id"] == user("bob")]
        assert from_bob == ["before", "during", "after"]
        assert [chat for chat in chats if chat["user_id"] == user("flooder")] == flooded
        if not any(frame["type"] == "user_left" for frame in others):
            others.append(await member.recv_until("user_left"))
        assert [f["payload"] for f in others if f["type"] == "user_left"] == [
            {"room_id": room_id, "user_id": user("flooder")}
        ]
        seen.append(chats)
    assert seen[0] == seen[1]
    assert await history(limited, room_id) == [stored(chat) for chat in seen[0]]


async def test_nothing_a_flooder_sent_after_the_cut_is_acted_on(
    limited: ServerProcess, pool: Pool, new_room: NewRoom, user: UserName
) -> None:
    room_id = new_room()
    [bob] = await members(pool, limited, room_id, user("bob"))
    flooder = await pool.raw(limited, user("flooder"))
    await flooder.recv("connected")
    await flooder.send_json("join_room", {"room_id": room_id})
    await flooder.recv("room_users")
    await bob.recv("user_joined")
    # One write: 50 bad frames pass the limiter, 51 are refused (the last one cuts), then
    # chat, whose own bucket is still full.
    late_chat = {"type": "chat", "payload": {"room_id": room_id, "content": "after the cut"}}
    frames = [mask_frame(b"{not json")] * 120 + [mask_frame(json.dumps(late_chat).encode())]
    await asyncio.get_running_loop().sock_sendall(flooder.sock, b"".join(frames))
    assert (await bob.recv("user_left"))["payload"]["user_id"] == user("flooder")
    await bob.recv("presence")
    marker = await bob.chat(room_id, "marker")
    assert await history(limited, room_id) == [stored(marker)]
