"""Creating rooms is limited per user (a rate and a number kept in the database), and
every list the HTTP API serves comes in pages of bounded size.

Each test runs its own server, so it knows every room there is. Refusals are
checked for what did not happen too: the room was not created, the list did
not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from tests.harness.client import Client
from tests.harness.http import http_request
from tests.harness.server import ServerProcess
from tests.harness.timing import eventually_equal

NO_LIMITS = ("--rate-limits", "off")


class Servers:
    """The test's servers and clients, stopped and closed afterwards."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers: list[ServerProcess] = []
        self.clients: list[Client] = []

    def start(self, *flags: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(self.directory / "roomcast.db", *flags, env=env)
        self.servers.append(server)
        return server.start()

    async def client(self, server: ServerProcess, user_id: str) -> Client:
        client = await Client.connect(server.ws_url, user_id)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        for server in self.servers:
            if server.proc is not None:
                server.stop()


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    pool = Servers(tmp_path)
    try:
        yield pool
    finally:
        await pool.close()


async def get(server: ServerProcess, path: str, **params: Any) -> tuple[int, Any]:
    query = f"?{urlencode(params)}" if params else ""
    status, content_type, body = await http_request("GET", f"{server.http}{path}{query}")
    assert content_type == "application/json", (status, body)
    return status, body


async def post_room(
    server: ServerProcess, owner: str, name: str = "room", **extra: Any
) -> tuple[int, Any, dict[str, str]]:
    """POST /api/rooms: status, body and the response headers."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.http}/api/rooms?user_id={owner}", json={"name": name, **extra}
        ) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


async def create_room(server: ServerProcess, owner: str, name: str = "room", **extra: Any) -> Any:
    status, body, _ = await post_room(server, owner, name, **extra)
    assert status == 201, body
    return body


async def room_pages(server: ServerProcess, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of GET /api/rooms, following ``next``."""
    pages: list[list[dict[str, Any]]] = []
    after: int | None = None
    while True:
        status, body = await get(
            server, "/api/rooms", **params, **({} if after is None else {"after": after})
        )
        assert status == 200, body
        assert set(body) == {"rooms", "next"}, body
        pages.append(body["rooms"])
        after = body["next"]
        if after is None:
            return pages
        assert after == body["rooms"][-1]["id"], body


def assert_error(status: int, body: Any, expected: int, code: str, *names: str) -> None:
    assert status == expected, body
    assert body["error"]["code"] == code, body
    for name in names:
        assert name in body["error"]["message"], (name, body)


async def room_exists(server: ServerProcess, room_id: int) -> bool:
    status, body = await get(server, f"/api/rooms/{room_id}/users")
    assert status in (200, 404), body
    return status == 200


# -- creating rooms ---------------------------------------------------------------------


async def test_room_creation_is_rate_limited_per_user_over_http_and_websocket(
    servers: Servers,
) -> None:
    server = servers.start()  # default limits: 20 rooms at once, then one a second
    # Rooms created over HTTP and by joining a new id share one bucket.
    first = await create_room(server, "alice", "one")
    for i in range(18):
        await create_room(server, "alice", f"more {i}")
    alice = await servers.client(server, "alice")
    await alice.join(first["id"] + 100)

    status, body, headers = await post_room(server, "alice", "one too many")
    assert_error(status, body, 429, "rate_limited", "rooms")
    assert 0 < body["error"]["retry_after_ms"] <= 1000, body
    assert headers["Retry-After"] == "1", headers
    await alice.send("join_room", {"room_id": first["id"] + 200})
    refused = await alice.expect_error("rate_limited", "join_room")
    assert 0 < refused["retry_after_ms"] <= 1000, refused
    # Nothing was created, and a room that exists can still be joined.
    assert not await room_exists(server, first["id"] + 200)
    assert [len(page) for page in await room_pages(server, limit=500)] == [20]
    assert (await alice.join(first["id"]))["room_id"] == first["id"]
    # Another user has a bucket of their own.
    bobs = await create_room(server, "bob", "bob's")
    assert (await alice.recv("room_created"))["payload"]["room"] == bobs  # told of it

    await asyncio.sleep(refused["retry_after_ms"] / 1000 + 0.05)
    in_time = await create_room(server, "alice", "in time")
    assert (await alice.recv("room_created"))["payload"]["room"] == in_time
    await alice.sync()


async def test_one_address_naming_a_new_user_for_each_room_is_limited_too(
    servers: Servers,
) -> None:
    """Open mode: a client can name any user, so its address has a bucket too
    (five times a user's: 100 rooms at once, then five a second)."""
    server = servers.start()
    started = time.monotonic()
    for n in range(300):  # a new user each time: no user's own bucket is ever short
        status, body, _ = await post_room(server, f"mask{n}", f"room {n}")
        if status != 201:
            break
    elapsed = time.monotonic() - started
    assert_error(status, body, 429, "rate_limited", "rooms")
    # The address's burst, and what refilled meanwhile (five a second).
    assert 100 <= n <= 100 + 5 * elapsed + 1, (n, elapsed)
    assert sum(len(page) for page in await room_pages(server, limit=500)) == n


async def test_many_joining_one_new_room_at_once_create_it_once(servers: Servers) -> None:
    """Everyone re-joining at once after a restart: 150 clients from one address join
    five new rooms together. Each room is created once and charged once, so
    nobody is refused (the address's bucket holds 100)."""
    server = servers.start()
    clients = [await servers.client(server, f"joiner{n}") for n in range(150)]
    base = 5000
    for n, client in enumerate(clients):
        await client.send("join_room", {"room_id": base + n % 5})
    for client in clients:
        assert (await client.recv_until("room_users", timeout=10))["type"] == "room_users"
    rooms = [room["id"] for page in await room_pages(server, limit=500) for room in page]
    assert rooms == [base + n for n in range(5)]
    # The five creations took five of the address's tokens: 95 more rooms may follow.
    for n in range(95):
        await create_room(server, f"later{n}", f"later {n}")


async def test_rooms_per_user_are_capped_over_http_and_websocket_and_across_restarts(
    servers: Servers,
) -> None:
    # (Set in the environment, as ROOMCAST_* variables are.)
    cap = {"ROOMCAST_MAX_ROOMS_PER_USER": "3"}
    server = servers.start(*NO_LIMITS, env=cap)
    created = [await create_room(server, "alice", f"r{i}") for i in range(2)]
    alice = await servers.client(server, "alice")
    joined_id = created[-1]["id"] + 10
    await alice.join(joined_id)  # open mode: a new id is a room alice creates

    status, body, _ = await post_room(server, "alice", "one too many")
    assert_error(status, body, 403, "forbidden", "3 rooms")
    await alice.send("join_room", {"room_id": joined_id + 1})
    await alice.expect_error("forbidden", "join_room")
    assert not await room_exists(server, joined_id + 1)
    # Others are not affected, and alice still joins rooms that exist.
    bobs = await create_room(server, "bob", "bob's")
    assert (await alice.recv("room_created"))["payload"]["room"] == bobs
    assert (await alice.join(bobs["id"]))["room_id"] == bobs["id"]
    listed = [room["id"] for page in await room_pages(server) for room in page]
    assert listed == sorted([*(room["id"] for room in created), joined_id, bobs["id"]])

    # The count is the database's: a restarted server still refuses.
    await alice.close()
    server.stop()
    server = servers.start(*NO_LIMITS, env=cap)
    status, body, _ = await post_room(server, "alice", "after the restart")
    assert_error(status, body, 403, "forbidden")
    await create_room(server, "carol", "carol's")


async def test_the_room_cap_holds_across_two_servers_on_one_database(servers: Servers) -> None:
    """Two nodes of a cluster (two processes on one SQLite file): one count."""
    cap = {"ROOMCAST_MAX_ROOMS_PER_USER": "4"}
    nodes = [servers.start(*NO_LIMITS, env=cap), servers.start(*NO_LIMITS, env=cap)]
    results = await asyncio.gather(*(post_room(nodes[i % 2], "alice", f"r{i}") for i in range(10)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201] * 4 + [403] * 6, results
    for node in nodes:
        rooms = [room for page in await room_pages(node) for room in page]
        assert [room["created_by"] for room in rooms] == ["alice"] * 4


# -- the room list ------------------------------------------------------------------------


async def test_room_pages_cover_every_visible_room_once_in_id_order(servers: Servers) -> None:
    server = servers.start(*NO_LIMITS)
    public = [await create_room(server, f"u{i % 3}", f"Room {i}") for i in range(55)]
    mine = await create_room(server, "alice", "mine", private=True, members=["bob"])
    theirs = await create_room(server, "carol", "theirs", private=True)
    everyone = sorted(room["id"] for room in public)

    # No limit asked: the first 50.
    status, body = await get(server, "/api/rooms")
    assert status == 200
    assert [room["id"] for room in body["rooms"]] == everyone[:50]
    assert body["next"] == everyone[49]

    for params, expected in (
        ({"limit": 7}, everyone),
        ({"limit": 7, "user_id": "alice"}, sorted([*everyone, mine["id"]])),
        ({"limit": 500, "user_id": "bob"}, sorted([*everyone, mine["id"]])),
        ({"limit": 1, "user_id": "carol"}, sorted([*everyone, theirs["id"]])),
    ):
        pages = await room_pages(server, **params)
        assert all(len(page) == params["limit"] for page in pages[:-1]), params
        assert 1 <= len(pages[-1]) <= params["limit"], params
        assert [room["id"] for page in pages for room in page] == expected, params

    # A page may start anywhere: after an id, whether or not it is a room's.
    status, body = await get(server, "/api/rooms", after=everyone[10] - 1, limit=2)
    assert [room["id"] for room in body["rooms"]] == everyone[10:12]
    status, body = await get(server, "/api/rooms", after=theirs["id"], limit=2)
    assert (status, body) == (200, {"rooms": [], "next": None})


async def test_room_list_filters_by_name(servers: Servers) -> None:
    server = servers.start(*NO_LIMITS)
    names = ["General", "general chat", "Random", "Café", "CAFÉ", "x_y", "x%y"]
    ids = {name: (await create_room(server, "alice", name))["id"] for name in names}
    await create_room(server, "carol", "general (secret)", private=True)

    async def named(q: str, **params: Any) -> list[str]:
        pages = await room_pages(server, q=q, **params)
        return [room["name"] for page in pages for room in page]

    assert await named("general", limit=1) == ["General", "general chat"]
    assert await named("GENERAL") == ["General", "general chat"]
    assert await named("general", user_id="carol") == [
        "General",
        "general chat",
        "general (secret)",
    ]
    assert await named("caf") == ["Café", "CAFÉ"]
    # ASCII letters match in either case; others as they are (NFC on both sides).
    assert await named("café") == ["Café"]
    assert await named("cafe\u0301") == ["Café"]
    assert await named("%") == ["x%y"]  # no wildcards
    assert await named("_") == ["x_y"]
    assert await named("nothing like it") == []
    assert len(await named("")) == len(names)  # an empty filter box filters nothing
    status, body = await get(server, "/api/rooms", q="a", after=ids["Random"])
    assert status == 200, body
    assert [room["name"] for room in body["rooms"]] == ["Café", "CAFÉ"]


@pytest.mark.parametrize(
    ("path", "params", "names"),
    [
        pytest.param("/api/rooms", {"limit": "0"}, ("limit",), id="rooms-limit-0"),
        pytest.param("/api/rooms", {"limit": "501"}, ("limit", "500"), id="rooms-limit-501"),
        pytest.param("/api/rooms", {"limit": "ten"}, ("limit",), id="rooms-limit-word"),
        pytest.param("/api/rooms", {"after": "-1"}, ("after",), id="rooms-after-negative"),
        pytest.param("/api/rooms", {"after": "x"}, ("after",), id="rooms-after-word"),
        pytest.param("/api/rooms", {"after": str(2**53)}, ("after",), id="rooms-after-huge"),
        pytest.param("/api/rooms", {"q": "q" * 101}, ("q", "100"), id="rooms-q-long"),
        pytest.param("/api/calls", {"after": "nope"}, ("after",), id="calls-after-word"),
        pytest.param("/api/calls", {"after": "12."}, ("after",), id="calls-after-no-id"),
        pytest.param("/api/calls", {"after": "-5.abc"}, ("after",), id="calls-after-negative"),
        pytest.param("/api/calls", {"limit": "501"}, ("limit",), id="calls-limit-501"),
        pytest.param("/api/rooms/{room}/users", {"limit": "0"}, ("limit",), id="users-limit-0"),
        pytest.param("/api/rooms/{room}/users", {"after": ""}, ("after",), id="users-after-empty"),
        pytest.param(
            "/api/rooms/{room}/members", {"limit": "501"}, ("limit",), id="members-limit-501"
        ),
        pytest.param(
            "/api/rooms/{room}/members", {"after": "\u202e"}, ("after",), id="members-after-bidi"
        ),
    ],
)
async def test_bad_page_parameters_are_invalid_message_and_change_nothing(
    quiet_server: tuple[ServerProcess, int],
    path: str,
    params: dict[str, str],
    names: tuple[str, ...],
) -> None:
    server, room_id = quiet_server
    before = await room_pages(server, user_id="alice")
    status, body = await get(server, path.format(room=room_id), user_id="alice", **params)
    assert_error(status, body, 400, "invalid_message", *names)
    assert set(body["error"]) == {"code", "message"}
    assert await room_pages(server, user_id="alice") == before


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    """A server with a few rooms that only the bad-parameter cases look at."""
    server = ServerProcess(tmp_path_factory.mktemp("quiet") / "roomcast.db", *NO_LIMITS).start()

    async def fill() -> int:
        await create_room(server, "bob", "public")
        room = await create_room(server, "alice", "private", private=True, members=["bob"])
        return int(room["id"])

    try:
        yield server, asyncio.run(fill())
    finally:
        server.stop()


async def test_private_room_members_are_listed_in_part_and_paged_in_full(
    servers: Servers,
) -> None:
    server = servers.start(*NO_LIMITS)
    members = [f"member-{i:02d}" for i in range(30)]
    room = await create_room(server, "alice", "big", private=True, members=members)
    everyone = sorted(["alice", *members])
    assert room["members"] == everyone and room["member_count"] == 31  # as created

    [[listed]] = await room_pages(server, user_id="member-29")
    assert listed["members"] == everyone[:20]
    assert listed["member_count"] == 31

    seen: list[str] = []
    after: str | None = None
    while True:
        extra = {} if after is None else {"after": after}
        status, body = await get(
            server, f"/api/rooms/{room['id']}/members", user_id="alice", limit=7, **extra
        )
        assert status == 200, body
        assert len(body["members"]) <= 7
        seen += [member["user_id"] for member in body["members"]]
        assert all(m["role"] == ("owner" if m["user_id"] == "alice" else "member")
                   for m in body["members"])  # fmt: skip
        after = body["next"]
        if after is None:
            break
    assert seen == everyone
    status, body = await get(server, f"/api/rooms/{room['id']}/members", user_id="carol")
    assert_error(status, body, 403, "forbidden")


async def test_room_users_come_in_pages(servers: Servers) -> None:
    server = servers.start(*NO_LIMITS)
    room = await create_room(server, "u0", "crowd")
    names = [f"u{i}" for i in range(5)]
    for name in names:
        client = await servers.client(server, name)
        await client.join(room["id"])

    async def users(**params: Any) -> Any:
        status, body = await get(server, f"/api/rooms/{room['id']}/users", **params)
        assert status == 200, body
        return body

    await eventually_equal(lambda: users(), {"room_id": room["id"], "users": online(names)})
    first = await users(limit=2)
    assert first == {"room_id": room["id"], "users": online(names[:2]), "next": "u1"}
    second = await users(limit=2, after="u1")
    assert second == {"room_id": room["id"], "users": online(names[2:4]), "next": "u3"}
    assert await users(limit=2, after="u3") == {"room_id": room["id"], "users": online(["u4"])}
    assert await users(after="u") == {"room_id": room["id"], "users": online(names)}


def online(names: list[str]) -> list[dict[str, str]]:
    return [{"user_id": name, "status": "online"} for name in names]


async def test_calls_come_in_pages_newest_first(servers: Servers) -> None:
    server = servers.start(*NO_LIMITS)
    alice = await servers.client(server, "alice")
    count = 12
    for _ in range(count):  # bob is offline: each attempt ends at once, recorded
        await alice.send("webrtc", {"type": "offer", "to_user_id": "bob", "data": {}})
        await alice.recv_until("call_ended")

    async def everything() -> list[Any]:
        status, body = await get(server, "/api/calls", user_id="alice", limit=500)
        assert status == 200 and body["next"] is None, body
        return list(body["calls"])

    deadline = time.monotonic() + 5
    while len(all_calls := await everything()) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(all_calls) == count

    paged: list[Any] = []
    after: str | None = None
    while True:
        extra = {} if after is None else {"after": after}
        status, body = await get(server, "/api/calls", user_id="alice", limit=5, **extra)
        assert status == 200, body
        assert set(body) == {"calls", "next"}
        paged += body["calls"]
        after = body["next"]
        if after is None:
            break
        last = body["calls"][-1]
        assert after == f"{last['started_at']}.{last['call_id']}"
    assert paged == all_calls
    starts = [call["started_at"] for call in paged]
    assert starts == sorted(starts, reverse=True)
