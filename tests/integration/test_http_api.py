"""The HTTP API: health, rooms, room users and message history.

This module runs its own open-mode server and creates every room with
``POST /api/rooms``: ids of created rooms come from the database, so mixing
them with the shared server's fixed room ids could make two tests share a room.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.harness.client import Client
from tests.harness.http import HISTORY_EXTRAS, all_rooms, http_request
from tests.harness.server import ServerProcess

UserName = Callable[[str], str]
ROOM_FIELDS = {
    "id",
    "name",
    "private",
    "created_by",
    "created_at",
    "members",
    "member_count",
    "topic",
    "kind",
    "archived_at",
    "role",
}
HISTORY_FIELDS = {
    "id",
    "room_id",
    "user_id",
    "content",
    "type",
    "created_at",
    "edited_at",
    "reactions",
    "thread_id",
    "mentions",
    "thread",
    "deleted_at",
}


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database = tmp_path_factory.mktemp("http") / "roomcast.db"
    process = ServerProcess(database).start()
    yield process
    process.stop()


@pytest.fixture
async def connect(api_server: ServerProcess) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []

    async def open_client(user_id: str) -> Client:
        client = await Client.connect(api_server.ws_url, user_id)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


async def get(server: ServerProcess, path: str) -> tuple[int, Any]:
    status, content_type, body = await http_request("GET", f"{server.http}{path}")
    assert content_type == "application/json", (status, content_type, body)
    return status, body


async def create_room(
    server: ServerProcess, owner: str, name: str = "room", **extra: Any
) -> dict[str, Any]:
    status, _, room = await http_request(
        "POST", f"{server.http}/api/rooms?user_id={owner}", json_body={"name": name, **extra}
    )
    assert status == 201, room
    return dict(room)


def assert_error(status: int, body: Any, expected_status: int, code: str, *names: str) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    for name in names:
        assert name in body["error"]["message"], (name, body)


async def history(server: ServerProcess, room_id: int, query: str = "") -> dict[str, Any]:
    status, page = await get(server, f"/api/rooms/{room_id}/messages{query}")
    assert status == 200, page
    assert set(page) == {"messages", "next_before", "next_after"}
    for message in page["messages"]:
        assert set(message) == HISTORY_FIELDS, message
    return dict(page)


# -- health and rooms ---------------------------------------------------------------------


async def test_health_is_ok(api_server: ServerProcess) -> None:
    status, body = await get(api_server, "/health")
    expected = {"status": "ok", "database": "ok", "broker": "local", "node": "local"}
    if api_server.cluster:
        expected.update(broker="connected", node=body["node"])
    assert (status, body) == (200, expected)


async def test_created_rooms_are_listed(api_server: ServerProcess, user: UserName) -> None:
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    before_ms = int(time.time() * 1000)
    public = await create_room(api_server, alice, "general")
    assert public == {
        "id": public["id"],
        "name": "general",
        "private": False,
        "created_by": alice,
        "created_at": public["created_at"],
        "members": [],
        "member_count": 0,
        "topic": "",
        "kind": "room",
        "archived_at": None,
        "role": None,
    }
    assert before_ms - 1000 <= public["created_at"] <= int(time.time() * 1000) + 1000
    private = await create_room(
        api_server, alice, "inner circle", private=True, members=[bob, bob, alice]
    )
    assert private["private"] is True
    assert private["members"] == sorted([alice, bob])  # the creator is always a member
    assert private["id"] > public["id"]

    status, first_page = await get(api_server, "/api/rooms")
    assert status == 200 and set(first_page) == {"rooms", "next"}
    anonymous = await all_rooms(api_server)
    ids = [room["id"] for room in anonymous]
    assert ids == sorted(ids)
    assert public in anonymous
    assert private["id"] not in ids
    as_carol = await all_rooms(api_server, f"user_id={carol}")
    assert public in as_carol
    assert private["id"] not in [room["id"] for room in as_carol]
    as_bob = await all_rooms(api_server, f"user_id={bob}")
    assert public in as_bob and private in as_bob
    for room in as_bob:
        assert set(room) == ROOM_FIELDS

    # Open mode keeps private rooms private too.
    for path in ("messages", "users"):
        status, body = await get(api_server, f"/api/rooms/{private['id']}/{path}?user_id={carol}")
        assert_error(status, body, 403, "forbidden")
        status, body = await get(api_server, f"/api/rooms/{private['id']}/{path}")
        assert_error(status, body, 403, "forbidden")
        status, body = await get(api_server, f"/api/rooms/{private['id']}/{path}?user_id={bob}")
        assert status == 200, body


BAD_BODIES: list[Any] = [
    pytest.param({}, ("`name`",), id="name-missing"),
    pytest.param({"name": ""}, ("body.name",), id="name-empty"),
    pytest.param({"name": "n" * 101}, ("body.name",), id="name-too-long"),
    pytest.param({"name": 5}, ("body.name",), id="name-number"),
    pytest.param({"name": None}, ("body.name",), id="name-null"),
    pytest.param({"name": "r", "private": "yes"}, ("body.private",), id="private-string"),
    pytest.param({"name": "r", "members": "bob"}, ("body.members",), id="members-string"),
    pytest.param({"name": "r", "members": [5]}, ("body.members[0]",), id="member-number"),
    pytest.param({"name": "r", "members": ["ok", ""]}, ("body.members[1]",), id="member-empty"),
    pytest.param({"name": "r", "members": ["a\nb"]}, ("body.members[0]",), id="member-newline"),
    pytest.param({"name": "r", "members": ["m"] * 1001}, ("body.members",), id="too-many"),
    pytest.param({"name": "r", "colour": "red"}, ("`colour`",), id="unknown-field"),
    pytest.param([], ("body",), id="array"),
    pytest.param(None, ("body",), id="null"),
    pytest.param("general", ("body",), id="string"),
]


@pytest.mark.parametrize(("body", "names"), BAD_BODIES)
async def test_invalid_room_body_is_400_invalid_message(
    api_server: ServerProcess, user: UserName, body: Any, names: tuple[str, ...]
) -> None:
    _, before = await get(api_server, "/api/rooms")
    status, _, error = await http_request(
        "POST",
        f"{api_server.http}/api/rooms?user_id={user('alice')}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert_error(status, error, 400, "invalid_message", *names)
    assert await get(api_server, "/api/rooms") == (200, before)


@pytest.mark.parametrize("data", [b"{", b"", b"{'name': 'r'}", b'{"name": "r"} x', b"\xff"])
async def test_invalid_json_body_is_400_invalid_json(
    api_server: ServerProcess, user: UserName, data: bytes
) -> None:
    _, before = await get(api_server, "/api/rooms")
    status, _, error = await http_request(
        "POST", f"{api_server.http}/api/rooms?user_id={user('alice')}", data=data
    )
    assert_error(status, error, 400, "invalid_json")
    assert await get(api_server, "/api/rooms") == (200, before)


@pytest.mark.parametrize(
    "query", ["", "?user_id=", "?user_id=a%01b"], ids=["none", "empty", "ctrl"]
)
async def test_creating_a_room_needs_a_valid_user(api_server: ServerProcess, query: str) -> None:
    status, _, error = await http_request(
        "POST", f"{api_server.http}/api/rooms{query}", json_body={"name": "nobody's"}
    )
    assert_error(status, error, 401, "unauthenticated")


async def test_oversized_room_body_is_refused_with_413(
    api_server: ServerProcess, user: UserName
) -> None:
    _, before = await get(api_server, "/api/rooms")
    status, _, _ = await http_request(
        "POST",
        f"{api_server.http}/api/rooms?user_id={user('alice')}",
        json_body={"name": "r", "pad": "p" * 70_000},
    )
    assert status == 413
    assert await get(api_server, "/api/rooms") == (200, before)


async def test_oversized_room_body_gets_a_too_large_json_error(
    api_server: ServerProcess, user: UserName
) -> None:
    status, content_type, error = await http_request(
        "POST",
        f"{api_server.http}/api/rooms?user_id={user('alice')}",
        json_body={"name": "r", "pad": "p" * 70_000},
    )
    assert content_type == "application/json", error
    assert_error(status, error, 413, "too_large")


# -- room users ---------------------------------------------------------------------------


async def test_room_users_lists_online_users_with_their_status(
    api_server: ServerProcess, connect: Callable[..., Any], user: UserName
) -> None:
    room = (await create_room(api_server, user("alice")))["id"]
    assert await get(api_server, f"/api/rooms/{room}/users") == (
        200,
        {"room_id": room, "users": []},
    )
    alice: Client = await connect(user("alice"))
    bob: Client = await connect(user("bob"))
    await alice.join(room)
    await bob.join(room)
    await bob.send("presence", {"status": "away"})
    await bob.recv_until("presence")
    expected = {
        "room_id": room,
        "users": [
            {"user_id": user("alice"), "status": "online"},
            {"user_id": user("bob"), "status": "away"},
        ],
    }
    assert await get(api_server, f"/api/rooms/{room}/users") == (200, expected)
    await bob.close()
    await alice.recv_until("user_left")
    assert await get(api_server, f"/api/rooms/{room}/users") == (
        200,
        {"room_id": room, "users": [{"user_id": user("alice"), "status": "online"}]},
    )


# -- history --------------------------------------------------------------------------------


async def post_messages(alice: Client, room: int, count: int) -> list[dict[str, Any]]:
    return [await alice.chat(room, f"message {i}") for i in range(count)]


def as_history(message: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A broadcast ``chat`` payload as history shows it, with ``changes``."""
    return {**message, **HISTORY_EXTRAS, **changes}


async def walk(server: ServerProcess, room: int, limit: int) -> list[dict[str, Any]]:
    """Every page from the newest back, checking the cursor of each; returns messages in order."""
    pages: list[list[dict[str, Any]]] = []
    query = f"?limit={limit}"
    while True:
        page = await history(server, room, query)
        messages = page["messages"]
        ids = [m["id"] for m in messages]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), ids  # oldest first
        assert len(messages) <= limit
        pages.append(messages)
        if page["next_before"] is None:
            break
        assert len(messages) == limit, page  # only a full page points further back
        assert page["next_before"] == messages[0]["id"]
        assert len(pages) <= 100, "pagination does not end"
        query = f"?limit={limit}&before={page['next_before']}"
    result = [m for page_messages in reversed(pages) for m in page_messages]
    return result


async def test_history_pages_from_newest_to_oldest(
    api_server: ServerProcess, connect: Callable[..., Any], user: UserName
) -> None:
    room = (await create_room(api_server, user("alice")))["id"]
    alice: Client = await connect(user("alice"))
    await alice.join(room)
    sent = await post_messages(alice, room, 7)
    stored = [as_history(m) for m in sent]

    assert await history(api_server, room) == {
        "messages": stored,
        "next_before": None,
        "next_after": None,
    }
    first = await history(api_server, room, "?limit=3")
    assert first == {"messages": stored[4:], "next_before": sent[4]["id"], "next_after": None}
    second = await history(api_server, room, f"?limit=3&before={sent[4]['id']}")
    assert second == {"messages": stored[1:4], "next_before": sent[1]["id"], "next_after": None}
    third = await history(api_server, room, f"?limit=3&before={sent[1]['id']}")
    assert third == {"messages": stored[:1], "next_before": None, "next_after": None}
    # before is exclusive and need not be an id of this room.
    assert (await history(api_server, room, f"?before={sent[3]['id']}"))["messages"] == stored[:3]
    assert (await history(api_server, room, f"?before={2**53 - 1}"))["messages"] == stored
    assert (await history(api_server, room, f"?before={sent[0]['id']}"))["messages"] == []

    for limit in (1, 2, 3, 6, 7, 8, 100):
        assert await walk(api_server, room, limit) == stored, limit


async def test_history_shows_edits_and_reactions_and_hides_deleted_messages(
    api_server: ServerProcess, connect: Callable[..., Any], user: UserName
) -> None:
    room = (await create_room(api_server, user("alice")))["id"]
    alice: Client = await connect(user("alice"))
    bob: Client = await connect(user("bob"))
    await alice.join(room)
    await bob.join(room)
    await alice.recv("user_joined")
    first, second, third, fourth = await post_messages(alice, room, 4)

    await alice.send("message_edit", {"message_id": first["id"], "content": "edited"})
    edited = (await alice.recv_until("message_edit"))["payload"]
    assert edited["content"] == "edited" and edited["edited_at"] >= first["created_at"]
    for emoji, who, target in [
        ("👍", bob, first),
        ("👍", alice, first),
        ("🎉", alice, first),
        ("👍", bob, second),
        ("👍", bob, second),  # a second time takes it back
        ("❤️", bob, third),
    ]:
        await who.send("message_reaction", {"message_id": target["id"], "emoji": emoji})
        await who.recv_until("message_reaction")
        await asyncio.sleep(0.005)  # reactions are listed in the order they were made
    await alice.send("message_delete", {"message_id": third["id"]})
    await alice.recv_until("message_delete")

    expected = [
        as_history(
            first,
            content="edited",
            edited_at=edited["edited_at"],
            reactions={"👍": [user("bob"), user("alice")], "🎉": [user("alice")]},
        ),
        as_history(second),
        as_history(fourth),
    ]
    assert await history(api_server, room) == {
        "messages": expected,
        "next_before": None,
        "next_after": None,
    }
    assert await walk(api_server, room, 2) == expected
    assert (await history(api_server, room, f"?limit=1&before={fourth['id']}"))[
        "messages"
    ] == expected[1:2]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("?limit=0", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=101", "limit"),
        ("?limit=abc", "limit"),
        ("?limit=1.5", "limit"),
        ("?limit=", "limit"),
        ("?before=0", "before"),
        ("?before=-5", "before"),
        ("?before=abc", "before"),
        ("?before=", "before"),
        (f"?before={2**53}", "before"),
        ("?limit=10&before=x", "before"),
    ],
)
async def test_bad_history_parameters_are_400(
    api_server: ServerProcess, user: UserName, query: str, name: str
) -> None:
    room = (await create_room(api_server, user("alice")))["id"]
    status, body = await get(api_server, f"/api/rooms/{room}/messages{query}")
    assert_error(status, body, 400, "invalid_message", name)


async def test_largest_history_page_is_accepted(api_server: ServerProcess, user: UserName) -> None:
    room = (await create_room(api_server, user("alice")))["id"]
    assert (await history(api_server, room, "?limit=100")) == {
        "messages": [],
        "next_before": None,
        "next_after": None,
    }


@pytest.mark.parametrize("path", ["messages", "users"])
async def test_unknown_room_is_404_and_bad_room_id_is_400(
    api_server: ServerProcess, path: str
) -> None:
    status, body = await get(api_server, f"/api/rooms/{2**53 - 1}/{path}")
    assert_error(status, body, 404, "not_found", str(2**53 - 1))
    for bad in ("abc", "0", "-1", str(2**53), str(2**63)):
        status, body = await get(api_server, f"/api/rooms/{bad}/{path}")
        assert_error(status, body, 400, "invalid_message", "room_id")


async def test_page_with_the_oldest_message_has_no_next_before(
    api_server: ServerProcess, connect: Callable[..., Any], user: UserName
) -> None:
    room = (await create_room(api_server, user("alice")))["id"]
    alice: Client = await connect(user("alice"))
    await alice.join(room)
    sent = await post_messages(alice, room, 6)
    oldest = await history(api_server, room, f"?limit=3&before={sent[3]['id']}")
    assert [m["id"] for m in oldest["messages"]] == [m["id"] for m in sent[:3]]
    assert oldest["next_before"] is None
