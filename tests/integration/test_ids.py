"""Every id stays within 2**53 - 1, the largest integer a browser's ``JSON.parse``
holds exactly: larger ids are refused (``invalid_message``) over WebSocket and
HTTP, and the server never hands one out, even after a room took the largest id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.client import Client
from tests.harness.http import all_rooms, http_json
from tests.harness.server import ServerProcess

MAX_ID = 2**53 - 1


@pytest.fixture
async def fresh(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """A server of the test's own, so that it knows every room there is."""
    server = ServerProcess(tmp_path / "roomcast.db", "--rate-limits", "off").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server in which nothing may ever be created (the refusals' tests share it)."""
    server = ServerProcess(tmp_path_factory.mktemp("ids") / "roomcast.db").start()
    yield server
    server.stop()


async def create_room(server: ServerProcess, name: str) -> dict[str, Any]:
    status, room = await http_json("POST", f"{server.http}/api/rooms?user_id=alice", {"name": name})
    assert status == 201, room
    return dict(room)


async def test_rooms_created_after_the_largest_id_still_get_ids_a_browser_can_hold(
    fresh: ServerProcess,
) -> None:
    alice = await Client.connect(fresh.ws_url, "alice")
    try:
        first = await create_room(fresh, "first")
        assert (await alice.recv("room_created"))["payload"]["room"] == first
        assert (await alice.join(MAX_ID))["room_id"] == MAX_ID
        created = [await create_room(fresh, f"after {i}") for i in range(3)]
        ids = [room["id"] for room in created]
        # Announced with the ids the room list gives, within a browser's range too.
        announced = [(await alice.recv("room_created"))["payload"]["room"] for _ in ids]
        assert announced == created
        assert all(1 <= room_id <= MAX_ID for room_id in ids), ids
        assert len({first["id"], MAX_ID, *ids}) == 5  # every one new
        listed = [room["id"] for room in await all_rooms(fresh)]
        assert listed == sorted([first["id"], MAX_ID, *ids])
        # ... and each of them is the room a client then joins.
        for room_id in ids:
            assert (await alice.join(room_id))["room_id"] == room_id
    finally:
        await alice.close()


@pytest.mark.parametrize(
    ("type", "payload", "field"),
    [
        ("join_room", {"room_id": MAX_ID + 1}, "payload.room_id"),
        ("join_room", {"room_id": 2**63 - 1}, "payload.room_id"),
        ("join_room", {"room_id": 1, "since": MAX_ID + 1}, "payload.since"),
        ("leave_room", {"room_id": MAX_ID + 1}, "payload.room_id"),
        ("chat", {"room_id": MAX_ID + 1, "content": "hi"}, "payload.room_id"),
        ("typing", {"room_id": MAX_ID + 1, "is_typing": True}, "payload.room_id"),
        ("message_edit", {"message_id": MAX_ID + 1, "content": "x"}, "payload.message_id"),
        ("message_delete", {"message_id": MAX_ID + 1}, "payload.message_id"),
        ("message_reaction", {"message_id": MAX_ID + 1, "emoji": "x"}, "payload.message_id"),
    ],
)
async def test_ids_beyond_2_53_are_refused_over_websocket_and_create_nothing(
    empty_server: ServerProcess, type: str, payload: dict[str, Any], field: str
) -> None:
    alice = await Client.connect(empty_server.ws_url, "alice")
    try:
        await alice.send(type, payload)
        error = await alice.expect_error("invalid_message", type)
        assert error["message"].startswith(field), error
        assert str(MAX_ID) in error["message"], error
        await alice.sync()
        assert await all_rooms(empty_server) == []
    finally:
        await alice.close()


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (f"/api/rooms/{MAX_ID + 1}/users", "room_id"),
        (f"/api/rooms/{MAX_ID + 1}/members", "room_id"),
        (f"/api/rooms/{2**63 - 1}/messages", "room_id"),
        (f"/api/rooms/1/messages?before={MAX_ID + 1}", "before"),
        (f"/api/rooms?after={MAX_ID + 1}", "after"),
    ],
)
async def test_ids_beyond_2_53_are_refused_over_http(
    fresh: ServerProcess, path: str, name: str
) -> None:
    await create_room(fresh, "room 1")
    status, body = await http_json("GET", f"{fresh.http}{path}")
    assert status == 400, body
    assert body["error"]["code"] == "invalid_message", body
    assert body["error"]["message"].startswith(name), body
    assert str(MAX_ID) in body["error"]["message"], body


async def test_the_largest_id_is_accepted_over_http(fresh: ServerProcess) -> None:
    status, body = await http_json("GET", f"{fresh.http}/api/rooms/{MAX_ID}/users")
    assert (status, body["error"]["code"]) == (404, "not_found"), body
    room = await create_room(fresh, "room")
    status, body = await http_json(
        "GET", f"{fresh.http}/api/rooms/{room['id']}/messages?before={MAX_ID}"
    )
    assert (status, body) == (200, {"messages": [], "next_before": None, "next_after": None})
