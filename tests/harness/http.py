"""HTTP requests to a server, and the API's paged lists read to the end."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.harness.server import ServerProcess


async def http_json(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, headers=headers) as response,
    ):
        if response.status == 204:  # No Content
            return 204, None
        return response.status, await response.json()


async def http_request(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, Any]:
    """Any HTTP request: status, content type, and the body (parsed if it is JSON)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=json_body, data=data, headers=headers) as response,
    ):
        body: Any = await response.read()
        if response.content_type == "application/json":
            body = json.loads(body)
        else:
            body = body.decode(errors="replace")
        return response.status, response.content_type, body


async def history_page(
    server: ServerProcess, room_id: int, before: int | None = None, limit: int = 100
) -> dict[str, Any]:
    query = f"limit={limit}" + (f"&before={before}" if before is not None else "")
    status, page = await http_json("GET", f"{server.http}/api/rooms/{room_id}/messages?{query}")
    assert status == 200, page
    result: dict[str, Any] = page
    return result


async def history(server: ServerProcess, room_id: int) -> list[dict[str, Any]]:
    """Every stored message of the room, oldest first, following the HTTP history pages."""
    messages: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        page = await history_page(server, room_id, before)
        messages[:0] = page["messages"]
        before = page["next_before"]
        if before is None:
            return messages


async def room_user_ids(server: ServerProcess, room_id: int) -> list[str]:
    """Who is in the room now (nobody while the room does not exist yet)."""
    status, body = await http_json("GET", f"{server.http}/api/rooms/{room_id}/users")
    if status == 404:
        return []
    assert status == 200, body
    return [entry["user_id"] for entry in body["users"]]


async def all_rooms(
    server: ServerProcess, query: str = "", headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every room ``GET /api/rooms?<query>`` lists, following its pages."""
    rooms: list[dict[str, Any]] = []
    after = 0
    while True:
        url = f"{server.http}/api/rooms?limit=500&after={after}" + (f"&{query}" if query else "")
        status, page = await http_json("GET", url, headers=headers)
        assert status == 200, page
        rooms += page["rooms"]
        if page["next"] is None:
            return rooms
        after = page["next"]


#: What a history item has that a ``chat`` payload has not (for a message
#: that is no thread's root and was neither edited nor deleted).
HISTORY_EXTRAS: dict[str, Any] = {
    "edited_at": None,
    "reactions": {},
    "thread": None,
    "deleted_at": None,
}


def stored(message: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The history item of a broadcast ``chat`` payload (history has no client_msg_id)."""
    item = {key: value for key, value in message.items() if key != "client_msg_id"}
    return {**item, **HISTORY_EXTRAS, **changes}
