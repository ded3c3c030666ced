"""Connection and room limits refuse what is over them, with an error first, and change nothing.

Refusals are checked for what did not happen too, as :mod:`tests.harness.pool` says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.harness.chat import (
    send_chat,
)
from tests.harness.client import Client, expect_close
from tests.harness.http import history, http_json
from tests.harness.pool import Pool
from tests.harness.server import ServerProcess

UserName = Callable[[str], str]
NewRoom = Callable[[], int]


async def refused(server: ServerProcess, user_id: str) -> tuple[dict[str, Any], Any]:
    """Connect, expecting a refusal: the error frame (instead of connected) and the CLOSE."""
    client = await Client.connect(server.ws_url, user_id, expect_connected=False)
    try:
        error = await client.recv("error")
        assert set(error["payload"]) == {"code", "message"}, error
        message = await asyncio.wait_for(client.ws.receive(), 3)
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return error["payload"], message
    finally:
        await client.close()


async def connect_eventually(pool: Pool, server: ServerProcess, user_id: str) -> Client:
    """A connection is accepted again once the server has seen an earlier one go."""
    deadline = time.monotonic() + 3
    while True:
        client = await Client.connect(server.ws_url, user_id, expect_connected=False)
        frame = await client.next()
        if frame["type"] == "connected":
            client.connected = frame["payload"]
            pool.clients.append(client)
            return client
        await client.close()
        assert time.monotonic() < deadline, frame
        await asyncio.sleep(0.05)


async def test_server_full_refuses_with_an_error_then_1013(pool: Pool) -> None:
    server = pool.server("--max-connections", "3")
    first, second, third = [await pool.client(server, name) for name in ("a", "b", "c")]
    error, close = await refused(server, "d")
    assert error["code"] == "rate_limited"
    assert "full" in error["message"]
    assert (close.data, close.extra) == (1013, "rate_limited")
    for client in (first, second, third):  # the refusal took nothing from the others
        await client.sync()
    await first.close()
    assert (await connect_eventually(pool, server, "d")).connected["user_id"] == "d"
    await refused(server, "e")


async def test_per_user_and_per_address_limits_refuse_with_1008(pool: Pool) -> None:
    server = pool.server("--max-connections-per-user", "2", "--max-connections-per-ip", "4")
    alice_tabs = [await pool.client(server, "alice") for _ in range(2)]
    error, close = await refused(server, "alice")
    assert error["code"] == "rate_limited"
    assert "user" in error["message"]
    assert (close.data, close.extra) == (1008, "rate_limited")
    # Other users are not affected, until the address has its 4.
    await pool.client(server, "bob")
    await pool.client(server, "carol")
    error, close = await refused(server, "dave")
    assert error["code"] == "rate_limited"
    assert "address" in error["message"]
    assert (close.data, close.extra) == (1008, "rate_limited")
    for tab in alice_tabs:
        await tab.sync()
    # A place frees up when one of alice's tabs closes.
    await alice_tabs[0].close()
    await connect_eventually(pool, server, "alice")


async def test_joining_more_rooms_than_allowed_is_forbidden_and_changes_nothing(
    pool: Pool,
) -> None:
    server = pool.server("--max-rooms-per-connection", "2")
    bob = await pool.client(server, "bob")
    await bob.join(3)
    alice = await pool.client(server, "alice")
    await alice.join(1)
    await alice.join(2)
    await alice.send("join_room", {"room_id": 3})
    error = await alice.expect_error("forbidden", "join_room")
    assert "2" in error["message"]
    await send_chat(alice, 3, "not a member")
    await alice.expect_error("forbidden", "chat")
    await bob.sync()  # no user_joined
    status, body = await http_json("GET", f"{server.http}/api/rooms/3/users")
    assert (status, body) == (
        200,
        {"room_id": 3, "users": [{"user_id": "bob", "status": "online"}]},
    )
    # Still in its two rooms; a room it is in can be joined again.
    assert (await alice.chat(1, "still here"))["room_id"] == 1
    assert (await alice.join(2))["room_id"] == 2
    # After leaving one, the third room is open.
    await alice.send("leave_room", {"room_id": 1})
    await alice.join(3)
    assert (await bob.recv("user_joined"))["payload"] == {"room_id": 3, "user_id": "alice"}
    assert await history(server, 3) == []


async def test_refused_join_of_a_new_room_does_not_create_it(pool: Pool) -> None:
    server = pool.server("--max-rooms-per-connection", "1")
    alice = await pool.client(server, "alice")
    await alice.join(1)
    await alice.send("join_room", {"room_id": 77})
    await alice.expect_error("forbidden", "join_room")
    status, body = await http_json("GET", f"{server.http}/api/rooms?user_id=alice")
    assert status == 200
    assert [room["id"] for room in body["rooms"]] == [1]


async def test_naming_the_user_late_still_counts_against_the_per_user_limit(
    pool: Pool,
) -> None:
    server = pool.server("--max-connections-per-user", "1")
    first = await pool.client(server, None)  # type: ignore[arg-type]
    await first.send("presence", {"status": "away", "user_id": "alice"})  # identifies
    await first.recv("presence")
    second = await pool.client(server, None)  # type: ignore[arg-type]
    await second.send("presence", {"status": "busy", "user_id": "alice"})
    await second.expect_error("rate_limited", "presence")
    await expect_close(second, 1008)
    await first.sync()  # the first connection is untouched


async def test_too_many_connections_on_late_identification_gets_an_error_then_1008(
    pool: Pool,
) -> None:
    server = pool.server("--max-connections-per-user", "1")
    await pool.client(server, "alice")
    late = await pool.client(server, None)  # type: ignore[arg-type]
    await late.send("join_room", {"room_id": 1, "user_id": "alice"})
    await late.expect_error("rate_limited", "join_room")
    await expect_close(late, 1008)
