"""Hardening, against real server processes: rate limits, floods, safe retries, resuming a
room with ``since``, connection limits, slow consumers, content cleaning and invalid UTF-8.

The shared ``server`` fixture runs without rate limits; tests that need them (or other
limits) start their own servers. Every test proves what did *not* happen as well: a
refused message is neither stored (HTTP history) nor broadcast (a later frame arrives
first, or a ping round trip shows nothing else is queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import subprocess
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness.client import Client, expect_close
from tests.harness.http import http_json
from tests.harness.raw_websocket import OPCODE_CLOSE, OPCODE_TEXT, RawWebSocket, mask_frame
from tests.harness.server import ServerProcess, rss_bytes
from tests.harness.timing import eventually_equal

CHAT_FIELDS = {"id", "room_id", "user_id", "content", "type", "created_at"}
UNKNOWN_MESSAGE_ID = 2**53 - 1  # the largest id there is

UserName = Callable[[str], str]
NewRoom = Callable[[], int]


# -- servers and clients --------------------------------------------------------------------


class Pool:
    """Servers and clients of one test; all of them are stopped and closed afterwards."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers: list[ServerProcess] = []
        self.clients: list[Client] = []
        self.raw_sockets: list[RawWebSocket] = []

    def server(self, *flags: str) -> ServerProcess:
        server = ServerProcess(self.directory / f"roomcast-{len(self.servers)}.db", *flags)
        self.servers.append(server)
        return server.start()

    async def client(self, server: ServerProcess, user_id: str, **kwargs: Any) -> Client:
        client = await Client.connect(server.ws_url, user_id, **kwargs)
        self.clients.append(client)
        return client

    async def raw(
        self, server: ServerProcess, user_id: str, rcvbuf: int | None = None
    ) -> RawWebSocket:
        raw = await RawWebSocket.connect(server.port, f"user_id={user_id}", rcvbuf=rcvbuf)
        self.raw_sockets.append(raw)
        return raw

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):  # already cut by the server
                await client.close()
        for raw in self.raw_sockets:
            raw.close()
        for server in self.servers:
            if server.proc is not None:
                server.stop()


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[Pool]:
    pool = Pool(tmp_path)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with the default rate limits, shared by the tests that meet them."""
    server = ServerProcess(tmp_path_factory.mktemp("limited") / "roomcast.db")
    try:
        yield server.start()
    finally:
        if server.proc is not None:
            server.stop()


# -- helpers ----------------------------------------------------------------------------------


async def send_chat(client: Client, room_id: int, content: str, **extra: Any) -> None:
    await client.send("chat", {"room_id": room_id, "content": content, "type": "text", **extra})


async def members(pool: Pool, server: ServerProcess, room_id: int, *names: str) -> list[Client]:
    """Clients of ``names``, all in ``room_id``, with every join announcement consumed."""
    clients: list[Client] = []
    for name in names:
        client = await pool.client(server, name)
        await client.join(room_id)
        for earlier in clients:
            joined = await earlier.recv("user_joined")
            assert joined["payload"] == {"room_id": room_id, "user_id": name}
        clients.append(client)
    return clients


async def history_page(
    server: ServerProcess, room_id: int, before: int | None = None, limit: int = 100
) -> dict[str, Any]:
    query = f"limit={limit}" + (f"&before={before}" if before is not None else "")
    status, page = await http_json("GET", f"{server.http}/api/rooms/{room_id}/messages?{query}")
    assert status == 200, page
    result: dict[str, Any] = page
    return result


async def history(server: ServerProcess, room_id: int) -> list[dict[str, Any]]:
    """Every stored message of the room, oldest first, following the pages."""
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


def stored(message: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The history item of a broadcast ``chat`` payload (history has no client_msg_id)."""
    item = {key: value for key, value in message.items() if key != "client_msg_id"}
    return {**item, "edited_at": None, "reactions": {}, **changes}


def assert_rate_limited(
    payload: dict[str, Any], type: str | None, longest_ms: int, client_msg_id: str | None = None
) -> None:
    """A ``rate_limited`` error for ``type``, with a wait in (0, longest_ms]."""
    expected: dict[str, Any] = {
        "code": "rate_limited",
        "message": payload.get("message"),
        "retry_after_ms": payload.get("retry_after_ms"),
    }
    if type is not None:
        expected["type"] = type
    if client_msg_id is not None:
        expected["client_msg_id"] = client_msg_id
    assert payload == expected
    assert isinstance(payload["message"], str) and payload["message"]
    assert isinstance(payload["retry_after_ms"], int)
    assert 0 < payload["retry_after_ms"] <= longest_ms, payload


async def receive_close(client: Client, timeout: float = 5.0) -> tuple[list[dict[str, Any]], Any]:
    """Every frame until the server's close, and the CLOSE message itself."""
    frames: list[dict[str, Any]] = []
    while True:
        message = await asyncio.wait_for(client.ws.receive(), timeout)
        if message.type is not aiohttp.WSMsgType.TEXT:
            assert message.type is aiohttp.WSMsgType.CLOSE, message
            return frames, message
        frames.append(json.loads(message.data))


async def chats_until(
    client: Client, content: str, timeout: float = 5.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Chat payloads up to the one with ``content``, and every other frame on the way."""
    chats: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not chats or chats[-1]["content"] != content:
        frame = await client.next(max(0.01, deadline - time.monotonic()))
        (chats if frame["type"] == "chat" else others).append(
            frame["payload"] if frame["type"] == "chat" else frame
        )
    return chats, others


# -- 1. rate limits -----------------------------------------------------------------------------


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


# -- 2. floods ----------------------------------------------------------------------------------


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


# -- 3. client_msg_id ---------------------------------------------------------------------------


async def test_retry_with_client_msg_id_is_stored_once_and_answered_to_the_sender_only(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    await send_chat(alice, room_id, "hello", client_msg_id="msg-1")
    original = (await alice.recv("chat"))["payload"]
    assert set(original) == CHAT_FIELDS | {"client_msg_id"}
    assert original["client_msg_id"] == "msg-1"
    assert original["content"] == "hello"
    assert (await bob.recv("chat"))["payload"] == original

    # The retry: the stored message again, to the sender only.
    await send_chat(alice, room_id, "hello", client_msg_id="msg-1")
    assert (await alice.recv("chat"))["payload"] == original
    # A retry from another connection of the same user (a reconnect) is the same retry.
    alice_again = await pool.client(server, user("alice"))
    await alice_again.join(room_id)
    await send_chat(alice_again, room_id, "hello", client_msg_id="msg-1")
    assert (await alice_again.recv("chat"))["payload"] == original

    # A marker without client_msg_id: the exact old payload shape, and it is the next chat
    # everyone gets (chat is broadcast in commit order, so a rebroadcast would come first).
    marker = await alice.chat(room_id, "marker")
    assert set(marker) == CHAT_FIELDS
    for member in (bob, alice_again):
        assert (await member.recv("chat"))["payload"] == marker

    # Another user may use the same client_msg_id: a message of their own.
    await send_chat(bob, room_id, "hello from bob", client_msg_id="msg-1")
    bobs = (await bob.recv("chat"))["payload"]
    assert bobs["id"] > marker["id"]
    assert {k: bobs[k] for k in ("user_id", "content", "client_msg_id")} == {
        "user_id": user("bob"),
        "content": "hello from bob",
        "client_msg_id": "msg-1",
    }
    for member in (alice, alice_again):
        assert (await member.recv("chat"))["payload"] == bobs
    for member in (alice, alice_again, bob):
        await member.sync()
    assert await history(server, room_id) == [stored(original), stored(marker), stored(bobs)]


async def test_retry_sent_before_the_first_is_committed_is_still_stored_once(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    for _ in range(3):  # no waiting: the copies may share one group commit
        await send_chat(alice, room_id, "once", client_msg_id="burst-1")
    first, *retries = [frame["payload"] for frame in await alice.recv_many(3)]
    assert first["client_msg_id"] == "burst-1"
    assert retries == [first, first]
    assert (await bob.recv("chat"))["payload"] == first
    await alice.sync()
    await bob.sync()
    assert await history(server, room_id) == [stored(first)]


async def test_retry_of_a_deleted_message_stays_deleted(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    await send_chat(alice, room_id, "regret", client_msg_id="gone-1")
    message = (await alice.recv("chat"))["payload"]
    await bob.recv("chat")
    await alice.send("message_delete", {"message_id": message["id"]})
    await alice.recv("message_delete")
    await bob.recv("message_delete")
    await send_chat(alice, room_id, "regret", client_msg_id="gone-1")
    error = await alice.expect_error("not_found", "chat")
    assert str(message["id"]) in error["message"]
    assert error["client_msg_id"] == "gone-1"
    await alice.sync()
    await bob.sync()
    assert await history(server, room_id) == []


@pytest.mark.parametrize("client_msg_id", ["", "x" * 65, 7], ids=["empty", "65-chars", "number"])
async def test_bad_client_msg_id_is_invalid_and_nothing_is_stored(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName, client_msg_id: Any
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    await send_chat(alice, room_id, "bad id", client_msg_id=client_msg_id)
    error = await alice.expect_error("invalid_message", "chat")
    assert "payload.client_msg_id" in error["message"]
    await bob.sync()
    assert await history(server, room_id) == []


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"room_id": 1}, "forbidden"),
        ({"content": "\u0000"}, "invalid_message"),
        ({"content": "x" * 4001}, "too_large"),
    ],
    ids=["not-a-member", "empty", "too-long"],
)
async def test_an_error_about_a_chat_names_its_client_msg_id(
    server: ServerProcess,
    pool: Pool,
    room_id: int,
    user: UserName,
    payload: dict[str, Any],
    code: str,
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    chat = {"room_id": room_id, "content": "hi", "client_msg_id": "named-1", **payload}
    await alice.send("chat", chat)
    error = await alice.expect_error(code, "chat")
    assert error == {
        "code": code,
        "message": error["message"],
        "type": "chat",
        "client_msg_id": "named-1",
    }
    await bob.sync()
    assert await history(server, room_id) == []


# -- 4. join_room with since --------------------------------------------------------------------


async def test_rejoin_with_since_replays_exactly_the_missed_messages_then_live(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    seen = [await bob.chat(room_id, f"seen {i}") for i in range(2)]
    assert [(await alice.recv("chat"))["payload"] for _ in seen] == seen
    last_seen = seen[-1]["id"]
    await alice.close()
    assert (await bob.recv("user_left"))["payload"] == {
        "room_id": room_id,
        "user_id": user("alice"),
    }
    await bob.recv("presence")  # alice offline
    missed = [await bob.chat(room_id, f"missed {i}") for i in range(3)]

    alice = await pool.client(server, user("alice"))
    await alice.send("join_room", {"room_id": room_id, "since": last_seen})
    room_users = await alice.recv("room_users")
    assert [u["user_id"] for u in room_users["payload"]["users"]] == sorted(
        [user("alice"), user("bob")]
    )
    assert [(await alice.recv("chat"))["payload"] for _ in missed] == missed
    assert (await bob.recv("user_joined"))["payload"]["user_id"] == user("alice")
    live = await bob.chat(room_id, "live")
    assert (await alice.recv("chat"))["payload"] == live
    await alice.sync()
    await bob.sync()
    assert await history(server, room_id) == [stored(m) for m in [*seen, *missed, live]]


async def test_more_missed_than_the_bound_gives_history_gap_then_the_newest(
    pool: Pool, user: UserName
) -> None:
    server = pool.server("--resume-max-messages", "2", "--rate-limits", "off")
    for room_id, missed_count, gap in [(1, 5, True), (2, 2, False)]:
        alice, bob = await members(pool, server, room_id, "alice", "bob")
        first = await bob.chat(room_id, "seen")
        assert (await alice.recv("chat"))["payload"] == first
        await alice.close()
        missed = [await bob.chat(room_id, f"missed {i}") for i in range(missed_count)]

        alice = await pool.client(server, "alice")
        await alice.send("join_room", {"room_id": room_id, "since": first["id"]})
        assert (await alice.recv("room_users"))["payload"]["room_id"] == room_id
        if gap:
            gap_frame = await alice.recv("history_gap")
            assert gap_frame["payload"] == {
                "room_id": room_id,
                "since": first["id"],
                "before": missed[-2]["id"],
            }
        assert [(await alice.recv("chat"))["payload"] for _ in range(2)] == missed[-2:]
        await alice.sync()
        if not gap:
            continue
        # What the gap left out: HTTP history before `before`, back to `since`.
        older: list[dict[str, Any]] = []
        before = gap_frame["payload"]["before"]
        while before is not None and (not older or older[0]["id"] > first["id"]):
            page = await history_page(server, room_id, before, limit=2)
            older[:0] = page["messages"]
            before = page["next_before"]
        assert [m for m in older if m["id"] > first["id"]] == [stored(m) for m in missed[:-2]]


async def test_join_with_since_zero(
    server: ServerProcess, pool: Pool, new_room: NewRoom, user: UserName
) -> None:
    fresh = new_room()
    alice = await pool.client(server, user("alice"))
    await alice.send("join_room", {"room_id": fresh, "since": 0})
    assert (await alice.recv("room_users"))["payload"] == {
        "room_id": fresh,
        "users": [{"user_id": user("alice"), "status": "online"}],
    }
    await alice.sync()  # nothing to replay
    posted = [await alice.chat(fresh, f"first {i}") for i in range(3)]

    bob = await pool.client(server, user("bob"))
    await bob.send("join_room", {"room_id": fresh, "since": 0})
    await bob.recv("room_users")
    # Everything the room has (fewer than --resume-max-messages), then nothing more.
    assert [(await bob.recv("chat"))["payload"] for _ in posted] == posted
    await bob.sync()


async def test_rejoining_with_since_while_messages_flow_misses_and_doubles_nothing(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName
) -> None:
    """Alice keeps leaving (by leave_room or by reconnecting) and re-joining with since while
    Bob streams messages: what she receives is the room's history, each message once."""
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    start = await bob.chat(room_id, "start")
    assert (await alice.recv("chat"))["payload"] == start
    total = 400
    bob_echoes: list[dict[str, Any]] = []

    async def bob_sends() -> None:
        for i in range(total):
            await send_chat(bob, room_id, f"stream {i}")
            if i % 4 == 3:
                await asyncio.sleep(0.001)

    async def bob_reads() -> None:
        while len(bob_echoes) < total:
            frame = await bob.next(timeout=10)
            if frame["type"] == "chat":
                bob_echoes.append(frame["payload"])

    received: list[dict[str, Any]] = []

    async def alice_reads(until: str) -> None:
        """Alice's frames up to the next of type ``until``; chats are kept."""
        while (frame := await alice.next(timeout=10))["type"] != until:
            assert frame["type"] == "chat", frame
            received.append(frame["payload"])

    sender, reader = asyncio.create_task(bob_sends()), asyncio.create_task(bob_reads())
    try:
        for cycle in range(20):
            if cycle % 4 == 0:
                await alice.close()
                alice = await pool.client(server, user("alice"))
            else:
                await alice.send("leave_room", {"room_id": room_id})
                await alice.send("ping")
                await alice_reads("pong")  # everything sent before the leave
            since = received[-1]["id"] if received else start["id"]
            await alice.send("join_room", {"room_id": room_id, "since": since})
            assert (await alice.recv("room_users"))["payload"]["room_id"] == room_id
            for _ in range(8):
                if sender.done() and len(received) == total:
                    break  # the stream is over (a slower back end takes fewer cycles)
                frame = await alice.next(timeout=10)
                assert frame["type"] == "chat", frame
                received.append(frame["payload"])
        await asyncio.gather(sender, reader)
        while received[-1]["id"] != bob_echoes[-1]["id"]:
            received.append((await alice.recv("chat", timeout=10))["payload"])
    finally:
        sender.cancel()
        reader.cancel()
    await alice.sync()
    assert [m["content"] for m in bob_echoes] == [f"stream {i}" for i in range(total)]
    # No gap, no duplicate: exactly the stored messages after "start", in order.
    assert [m["id"] for m in received] == [m["id"] for m in bob_echoes]
    assert received == bob_echoes
    assert [stored(m) for m in received] == (await history(server, room_id))[1:]


# -- 5. connection limits -----------------------------------------------------------------------


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


# -- 6. slow consumers --------------------------------------------------------------------------


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


# -- 7. content ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "clean"),
    [
        ("a\u0000b\u0007c\nd\te", "abc\nd\te"),
        ("one\r\ntwo\rthree", "one\ntwothree"),
        ("\u001b[31mred\u001b[0m", "[31mred[0m"),
        ("x\u007fy\u0085z\u009f!", "xyz!"),
        ("  spaced  ", "  spaced  "),
    ],
    ids=["nul-bel", "carriage-return", "escape", "del-c1", "spaces-kept"],
)
async def test_control_characters_are_stripped_from_chat_and_edits(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName, content: str, clean: str
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    message = await alice.chat(room_id, content)
    assert message["content"] == clean
    assert (await bob.recv("chat"))["payload"] == message
    await alice.send("message_edit", {"message_id": message["id"], "content": "v2 " + content})
    edit = (await alice.recv("message_edit"))["payload"]
    assert edit["content"] == "v2 " + clean
    assert (await bob.recv("message_edit"))["payload"] == edit
    assert await history(server, room_id) == [
        stored(message, content="v2 " + clean, edited_at=edit["edited_at"])
    ]


@pytest.mark.parametrize(
    "content", ["\u0000", "\u0000\u0007\u001b\u007f\u009b", "\u0000 \r\n\t\u0007"]
)
async def test_content_of_only_control_characters_is_invalid(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName, content: str
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    original = await alice.chat(room_id, "original")
    await bob.recv("chat")
    await send_chat(alice, room_id, content)
    error = await alice.expect_error("invalid_message", "chat")
    assert "payload.content" in error["message"]
    await alice.send("message_edit", {"message_id": original["id"], "content": content})
    await alice.expect_error("invalid_message", "message_edit")
    await alice.sync()
    await bob.sync()
    assert await history(server, room_id) == [stored(original)]


async def test_reaction_emoji_is_normalised_to_nfc(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    message = await alice.chat(room_id, "react")
    await bob.recv("chat")
    for decomposed, composed in [("e\u0301", "\u00e9"), ("\u212b", "\u00c5")]:
        assert unicodedata.normalize("NFC", decomposed) == composed != decomposed
        await bob.send("message_reaction", {"message_id": message["id"], "emoji": decomposed})
        added = {
            "message_id": message["id"],
            "room_id": room_id,
            "user_id": user("bob"),
            "emoji": composed,
            "action": "added",
        }
        for member in (alice, bob):
            assert (await member.recv("message_reaction"))["payload"] == added
    [item] = await history(server, room_id)
    assert item["reactions"] == {"\u00e9": [user("bob")], "\u00c5": [user("bob")]}
    # The composed form is the same reaction: sending it toggles the stored one off.
    await bob.send("message_reaction", {"message_id": message["id"], "emoji": "\u00e9"})
    for member in (alice, bob):
        assert (await member.recv("message_reaction"))["payload"]["action"] == "removed"
    assert (await history(server, room_id))[0]["reactions"] == {"\u00c5": [user("bob")]}


@pytest.mark.parametrize(
    "emoji",
    ["👍 👍", " 👍", "👍\u00a0", "x" * 33, "👍" * 33, "a\tb", "\u0007"],
    ids=["space", "leading-space", "nbsp", "33-ascii", "33-emoji", "tab", "bel"],
)
async def test_bad_reaction_emoji_is_invalid(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName, emoji: str
) -> None:
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    message = await alice.chat(room_id, "react")
    await bob.recv("chat")
    await bob.send("message_reaction", {"message_id": message["id"], "emoji": emoji})
    error = await bob.expect_error("invalid_message", "message_reaction")
    assert "payload.emoji" in error["message"]
    # 32 characters are fine.
    await bob.send("message_reaction", {"message_id": message["id"], "emoji": "x" * 32})
    for member in (alice, bob):
        assert (await member.recv("message_reaction"))["payload"]["emoji"] == "x" * 32
    await alice.sync()
    assert (await history(server, room_id))[0]["reactions"] == {"x" * 32: [user("bob")]}


@pytest.mark.parametrize("emoji", ["\u009b31m", "\u0080", "x\u009f"], ids=["csi", "pad", "apc"])
async def test_reaction_emoji_with_a_c1_control_character_is_invalid(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName, emoji: str
) -> None:
    """C1 controls (U+0080-U+009F) are control characters too (they are removed from chat
    content); a reaction made of them is refused, not stored."""
    alice, bob = await members(pool, server, room_id, user("alice"), user("bob"))
    message = await alice.chat(room_id, "react")
    await bob.recv("chat")
    await alice.send("message_reaction", {"message_id": message["id"], "emoji": emoji})
    error = await alice.expect_error("invalid_message", "message_reaction")
    assert "payload.emoji" in error["message"]
    await alice.sync()
    await bob.sync()
    assert (await history(server, room_id))[0]["reactions"] == {}


# -- 8. invalid UTF-8 ---------------------------------------------------------------------------


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


async def test_join_with_since_on_a_room_already_joined_replays_nothing(
    server: ServerProcess, pool: Pool, room_id: int, user: UserName
) -> None:
    alice = await pool.client(server, user("alice"))
    await alice.join(room_id)
    for text in ("one", "two"):
        await alice.chat(room_id, text)
    await alice.send("join_room", {"room_id": room_id, "since": 0})
    await alice.recv("room_users")
    await alice.sync()  # nothing but the pong: no message seen twice


async def test_a_client_msg_id_reused_in_another_room_is_refused_not_swallowed(
    server: ServerProcess, pool: Pool, new_room: NewRoom, user: UserName
) -> None:
    first, second = new_room(), new_room()
    alice = await pool.client(server, user("alice"))
    await alice.join(first)
    await alice.join(second)
    await alice.send("chat", {"room_id": first, "content": "a", "client_msg_id": "1"})
    await alice.recv_until("chat")
    await alice.send("chat", {"room_id": second, "content": "b", "client_msg_id": "1"})
    error = await alice.expect_error("invalid_message", "chat")
    assert "client_msg_id" in error["message"] and error["client_msg_id"] == "1"


async def test_too_many_connections_on_late_identification_gets_an_error_then_1008(
    pool: Pool,
) -> None:
    server = pool.server("--max-connections-per-user", "1")
    await pool.client(server, "alice")
    late = await pool.client(server, None)  # type: ignore[arg-type]
    await late.send("join_room", {"room_id": 1, "user_id": "alice"})
    await late.expect_error("rate_limited", "join_room")
    await expect_close(late, 1008)


def test_a_rate_of_zero_is_refused_at_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "roomcast", "serve", "--rate-limits", "typing=0/0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "rate must be > 0" in result.stderr
