"""The wire protocol against a real server: envelope, connect, ping, disconnect, idle timeout.

Room, chat, typing and presence behaviour are in test_rooms.py, test_chat.py and
test_typing_presence.py next to this file.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness.client import Client, Connect, users
from tests.harness.http import http_json
from tests.harness.server import ServerProcess
from tests.harness.timing import eventually_equal, now_ms


def assert_recent_ms(value: Any) -> None:
    """A millisecond Unix timestamp from the last minute (not seconds, not microseconds)."""
    assert isinstance(value, int)
    assert now_ms() - 60_000 <= value <= now_ms() + 1_000, value


async def test_connect_sends_connected_with_connection_and_user_id(
    server: ServerProcess, user: Callable[[str], str]
) -> None:
    first = await Client.connect(server.ws_url, user("alice"), expect_connected=False)
    second = await Client.connect(server.ws_url, user("alice"), expect_connected=False)
    try:
        frames = [await first.next(), await second.next()]
        for frame in frames:
            assert frame["type"] == "connected"
            assert set(frame["payload"]) == {"connection_id", "user_id"}
            assert frame["payload"]["user_id"] == user("alice")
            assert re.fullmatch(r"[0-9a-f]{32}", frame["payload"]["connection_id"])
            assert_recent_ms(frame["timestamp"])
        assert frames[0]["payload"]["connection_id"] != frames[1]["payload"]["connection_id"]
    finally:
        await first.close()
        await second.close()


async def test_connect_without_user_id_reports_no_user(connect: Connect) -> None:
    anonymous = await connect()
    assert anonymous.connected["user_id"] is None


async def test_ping_is_answered_with_an_empty_pong(
    connect: Connect, user: Callable[[str], str]
) -> None:
    alice = await connect(user("alice"))
    await alice.send("ping")
    frame = await alice.recv("pong")
    assert frame["payload"] == {}
    assert_recent_ms(frame["timestamp"])
    await alice.send("ping", {})
    assert (await alice.recv("pong"))["payload"] == {}


async def test_closed_client_leaves_room_users(
    server: ServerProcess, connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice = await connect(user("alice"))
    bob = await connect(user("bob"))
    await alice.join(room_id)
    await bob.join(room_id)
    await alice.recv("user_joined")

    async def http_users() -> Any:
        status, body = await http_json("GET", f"{server.http}/api/rooms/{room_id}/users")
        assert status == 200, body
        return body

    await eventually_equal(
        http_users,
        {
            "room_id": room_id,
            "users": [
                {"user_id": user("alice"), "status": "online"},
                {"user_id": user("bob"), "status": "online"},
            ],
        },
    )
    await bob.close()
    assert (await alice.recv("user_left"))["payload"] == {
        "room_id": room_id,
        "user_id": user("bob"),
    }
    await eventually_equal(
        http_users, {"room_id": room_id, "users": [{"user_id": user("alice"), "status": "online"}]}
    )
    carol = await connect(user("carol"))
    assert await carol.join(room_id) == {
        "room_id": room_id,
        "users": [
            {"user_id": user("alice"), "status": "online"},
            {"user_id": user("carol"), "status": "online"},
        ],
    }


async def test_idle_client_that_never_answers_pings_is_closed(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "roomcast.db", "--idle-timeout", "1").start()
    idle: Client | None = None
    watcher: Client | None = None
    try:
        idle = await Client.connect(server.ws_url, "idle", autoping=False)
        watcher = await Client.connect(server.ws_url, "watcher")
        await idle.join(1)
        await watcher.join(1)
        started = time.monotonic()
        left = await watcher.recv_until("user_left", timeout=5)
        assert left["payload"] == {"room_id": 1, "user_id": "idle"}
        assert time.monotonic() - started < 5
        presence = await watcher.recv("presence")
        assert presence["payload"] == {"user_id": "idle", "status": "offline"}

        # The idle client saw the server's pings, then its connection end.
        kinds: list[aiohttp.WSMsgType] = []
        while True:
            message = await asyncio.wait_for(idle.ws.receive(), 5)
            kinds.append(message.type)
            if message.type not in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.TEXT):
                break
        assert aiohttp.WSMsgType.PING in kinds
        assert kinds[-1] in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        )

        # The watcher answers pings (autoping) and so stays connected.
        await watcher.sync()
        status, body = await http_json("GET", f"{server.http}/api/rooms/1/users")
        assert status == 200
        assert users(body) == ["watcher"]
    finally:
        for client in (idle, watcher):
            if client is not None:
                await client.close()
        server.stop()


async def test_websocket_pings_are_answered_in_order_with_other_frames(
    server: ServerProcess,
) -> None:
    client = await Client.connect(server.ws_url, "pinger", autoping=False)
    try:
        await client.ws.ping(b"are you there")
        message = await asyncio.wait_for(client.ws.receive(), 3)
        assert message.type is aiohttp.WSMsgType.PONG
        assert message.data == b"are you there"
        await client.sync()  # the connection carries on
    finally:
        await client.close()
