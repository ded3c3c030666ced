"""Rate limits: bursts pass, then each kind of frame is limited on its own.

Refusals are checked for what did not happen too, as :mod:`tests.harness.pool` says.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.harness.chat import (
    CHAT_FIELDS,
    UNKNOWN_MESSAGE_ID,
    assert_rate_limited,
    send_chat,
)
from tests.harness.http import history, http_json, stored
from tests.harness.pool import Pool, members
from tests.harness.server import ServerProcess

UserName = Callable[[str], str]
NewRoom = Callable[[], int]


async def test_chat_burst_of_30_passes_then_chat_is_limited_while_typing_and_ping_pass(
    limited: ServerProcess, pool: Pool, new_room: NewRoom, user: UserName
) -> None:
    room_id, other_room = new_room(), new_room()
    alice, bob = await members(pool, limited, room_id, user("alice"), user("bob"))
    await alice.join(other_room)
    await bob.join(other_room)
    await alice.recv("user_joined")

    # One burst: 31 chats (the last with a client_msg_id), a reaction (also the chat
    # class), typing in another room, a ping.
    contents = [f"burst {i}" for i in range(31)]
    for content in contents[:30]:
        await send_chat(alice, room_id, content)
    await send_chat(alice, room_id, contents[30], client_msg_id="burst-30")
    await alice.send("message_reaction", {"message_id": UNKNOWN_MESSAGE_ID, "emoji": "👍"})
    await alice.send("typing", {"room_id": other_room, "is_typing": True})
    await alice.send("typing", {"room_id": other_room, "is_typing": False})
    await alice.send("ping")

    frames = await alice.recv_many(30 + 3)
    chats = [frame["payload"] for frame in frames if frame["type"] == "chat"]
    others = [frame for frame in frames if frame["type"] != "chat"]
    assert [chat["content"] for chat in chats] == contents[:30]
    assert all(chat["user_id"] == user("alice") and set(chat) == CHAT_FIELDS for chat in chats)
    assert [frame["type"] for frame in others] == ["error", "error", "pong"]
    chat_error, reaction_error = others[0]["payload"], others[1]["payload"]
    # 5 chat messages a second: the next token is at most 200 ms away. The error names
    # the refused message.
    assert_rate_limited(chat_error, "chat", 200, client_msg_id="burst-30")
    # Refused before it was looked at: an unknown message would otherwise be not_found.
    assert_rate_limited(reaction_error, "message_reaction", 200)

    # Bob got the 30 messages and the typing indicator (a class of its own), nothing else.
    bob_frames = await bob.recv_many(30 + 2)
    assert [f["payload"] for f in bob_frames if f["type"] == "chat"] == chats
    assert [f["payload"] for f in bob_frames if f["type"] != "chat"] == [
        {"room_id": other_room, "user_id": user("alice"), "is_typing": True},
        {"room_id": other_room, "user_id": user("alice"), "is_typing": False},
    ]
    await bob.sync()
    assert await history(limited, room_id) == [stored(chat) for chat in chats]

    # Waiting as told is enough: the refused message, sent again, is stored now.
    await asyncio.sleep(chat_error["retry_after_ms"] / 1000)
    await send_chat(alice, room_id, contents[30], client_msg_id="burst-30")
    again = (await alice.recv("chat"))["payload"]
    assert (again["content"], again["client_msg_id"]) == (contents[30], "burst-30")
    assert (await bob.recv("chat"))["payload"] == again
    await alice.sync()
    await bob.sync()
    assert await history(limited, room_id) == [stored(chat) for chat in [*chats, again]]


async def test_connections_of_one_user_share_twice_the_connection_burst(
    limited: ServerProcess, pool: Pool, new_room: NewRoom, user: UserName
) -> None:
    """Three tabs could send 3 x 30 on their own buckets; the user's bucket holds 2 x 30."""
    room_id = new_room()
    name = user("carol")
    tabs = [await pool.client(limited, name) for _ in range(3)]
    for tab in tabs:
        await tab.join(room_id)  # the same user: no user_joined to the other tabs

    started = time.monotonic()
    for t, tab in enumerate(tabs):
        for i in range(30):
            await send_chat(tab, room_id, f"tab {t} #{i}")
    for tab in tabs:
        await tab.send("ping")
    # A refusal is answered at once, so before the tab's pong; stored messages follow commits.
    errors: list[dict[str, Any]] = []
    early: list[list[dict[str, Any]]] = [[] for _ in tabs]
    for t, tab in enumerate(tabs):
        while (frame := await tab.next())["type"] != "pong":
            if frame["type"] == "error":
                errors.append(frame["payload"])
            else:
                assert frame["type"] == "chat", frame
                early[t].append(frame["payload"])
    elapsed = time.monotonic() - started

    accepted = 90 - len(errors)
    # 60, plus what the user's bucket (10/s) refilled while the 90 messages were handled.
    assert 60 <= accepted <= 60 + int(10 * elapsed), (accepted, elapsed)
    for error in errors:
        assert_rate_limited(error, "chat", 200)
    # Every tab is a member: each receives every stored message once, in one order.
    seen = []
    for t, tab in enumerate(tabs):
        rest = await tab.recv_many(accepted - len(early[t]))
        assert all(frame["type"] == "chat" for frame in rest), rest
        seen.append(early[t] + [frame["payload"] for frame in rest])
    assert seen[1] == seen[0]
    assert seen[2] == seen[0]
    for tab in tabs:
        await tab.sync()
    assert await history(limited, room_id) == [stored(chat) for chat in seen[0]]

    # The limit is the user's, not the room's: another user chats at once.
    dave = await pool.client(limited, user("dave"))
    await dave.join(room_id)
    assert (await dave.chat(room_id, "dave is not carol"))["user_id"] == user("dave")


def test_a_rate_of_zero_is_refused_at_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "roomcast", "serve", "--rate-limits", "typing=0/0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "rate must be > 0" in result.stderr


async def test_api_info_publishes_the_rates_a_client_should_keep_to(
    limited: ServerProcess, server: ServerProcess
) -> None:
    """The browser client paces its outbox by these instead of meeting refusals."""
    status, info = await http_json("GET", f"{limited.http}/api/info")
    assert status == 200, info
    assert info["rate_limits"]["chat"] == {"per_second": 5.0, "burst": 30.0}
    assert info["rate_limits"]["typing"] == {"per_second": 5.0, "burst": 20.0}
    status, info = await http_json("GET", f"{server.http}/api/info")  # --rate-limits off
    assert (status, info["rate_limits"]) == (200, None)
