"""User ids and room names: no control, invisible or bidi control characters, not
blank, and kept in NFC, wherever they enter (WebSocket and HTTP ``?user_id=``,
payload ``user_id``/``from_user_id``/``to_user_id``, private room ``members``, a
token's ``sub``, room names).

``"\\u202eecila"`` shows as "alice"; ``"zoe\\u0308"`` and ``"zo\\u00eb"`` are one
name written two ways. Every refusal is checked for what it did not do: nothing
was created and the connection has no user it did not ask for.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import jwt
import pytest

from tests.harness.client import Client, expect_close
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

SECRET = "a secret for the names tests, 32+ bytes"
ROOM_IDS = itertools.count(100)
NFC_NAME = "zo\u00eb"  # "zoë" as one character
NFD_NAME = "zoe\u0308"  # "zoë" as e and a combining diaeresis

BAD_USER_IDS = [
    pytest.param("\u202eecila", "U+202E", id="right-to-left-override"),
    pytest.param("al\u200bice", "U+200B", id="zero-width-space"),
    pytest.param("ali\u200dce", "U+200D", id="zero-width-joiner"),
    pytest.param("\u2066alice\u2069", "U+2066", id="bidi-isolate"),
    pytest.param("\ufeffalice", "U+FEFF", id="byte-order-mark"),
    pytest.param("alice\u2060", "U+2060", id="word-joiner"),
    pytest.param("al\u00adice", "U+00AD", id="soft-hyphen"),
    pytest.param("al\x85ice", "U+0085", id="c1-control"),
    pytest.param("   ", "blank", id="whitespace-only"),
    pytest.param("\u3164", "U+3164", id="hangul-filler"),
]
BAD_ROOM_NAMES = [
    pytest.param("a\x1b[31mred", "U+001B", id="escape"),
    pytest.param("ding\x07", "U+0007", id="bell"),
    pytest.param("nul\x00", "U+0000", id="nul"),
    pytest.param("   ", "blank", id="whitespace-only"),
    pytest.param("\u200b", "U+200B", id="zero-width-space"),
    pytest.param("\u202elareneg", "U+202E", id="right-to-left-override"),
    pytest.param("line\u2028break", "U+2028", id="line-separator"),
]


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("names") / "roomcast.db", "--rate-limits", "off")
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database = tmp_path_factory.mktemp("names-token") / "roomcast.db"
    server = ServerProcess(database, "--auth-secret", SECRET, "--rate-limits", "off")
    yield server.start()
    server.stop()


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


async def post_room(
    server: ServerProcess, body: Any, user_id: str | None = None, token_for: str | None = None
) -> tuple[int, Any]:
    query = "" if user_id is None else f"?user_id={quote(user_id)}"
    headers = None if token_for is None else {"Authorization": f"Bearer {token(token_for)}"}
    return await http_json("POST", f"{server.http}/api/rooms{query}", body, headers=headers)


async def all_rooms(server: ServerProcess, query: str = "") -> list[dict[str, Any]]:
    """The rooms listed (these servers hold fewer than one page of them)."""
    status, body = await http_json("GET", f"{server.http}/api/rooms?limit=500&{query}")
    assert status == 200 and body.get("next") is None, body
    return list(body["rooms"])


def refused(status: int, body: Any, expected: int, code: str, *words: str) -> None:
    assert status == expected, body
    assert body["error"]["code"] == code, body
    for word in words:
        assert word in body["error"]["message"], (word, body)


# -- user ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(("user_id", "why"), BAD_USER_IDS)
async def test_websocket_user_id_with_hidden_characters_is_refused(
    open_server: ServerProcess, user_id: str, why: str
) -> None:
    client = await Client.connect(open_server.ws_url, user_id, expect_connected=False)
    try:
        error = (await client.recv("error"))["payload"]
        assert error["code"] == "unauthenticated", error
        assert why in error["message"], error
        await expect_close(client, 1008)
    finally:
        await client.close()


@pytest.mark.parametrize("field", ["user_id", "from_user_id"])
@pytest.mark.parametrize(("user_id", "why"), BAD_USER_IDS)
async def test_payload_user_id_with_hidden_characters_is_refused(
    open_server: ServerProcess, field: str, user_id: str, why: str
) -> None:
    client = await Client.connect(open_server.ws_url)  # no user yet: the payload names it
    try:
        await client.send("presence", {"status": "away", field: user_id})
        error = await client.expect_error("invalid_message", "presence")
        assert error["message"].startswith(f"payload.{field}:"), error
        assert why in error["message"], error
        # The connection still has no user: the next claim decides it.
        room_id = next(ROOM_IDS)
        await client.send("join_room", {"room_id": room_id, field: "zed"})
        joined = (await client.recv("room_users"))["payload"]
        assert joined == {"room_id": room_id, "users": [{"user_id": "zed", "status": "online"}]}
    finally:
        await client.close()


@pytest.mark.parametrize(("user_id", "why"), BAD_USER_IDS)
async def test_to_user_id_with_hidden_characters_is_refused(
    open_server: ServerProcess, user_id: str, why: str
) -> None:
    client = await Client.connect(open_server.ws_url, "caller")
    try:
        offer = {"type": "offer", "to_user_id": user_id, "data": {"sdp": "v=0"}}
        await client.send("webrtc", offer)
        error = await client.expect_error("invalid_message", "webrtc")
        assert error["message"].startswith("payload.to_user_id:"), error
        assert why in error["message"], error
        await client.sync()
    finally:
        await client.close()


@pytest.mark.parametrize(("user_id", "why"), BAD_USER_IDS)
async def test_http_user_id_with_hidden_characters_is_refused(
    open_server: ServerProcess, user_id: str, why: str
) -> None:
    before = await all_rooms(open_server)
    status, body = await post_room(open_server, {"name": "r"}, user_id=user_id)
    refused(status, body, 401, "unauthenticated", "user_id", why)
    status, body = await http_json("GET", f"{open_server.http}/api/calls?user_id={quote(user_id)}")
    refused(status, body, 401, "unauthenticated", why)
    assert await all_rooms(open_server) == before


@pytest.mark.parametrize(("user_id", "why"), BAD_USER_IDS)
async def test_token_subject_with_hidden_characters_is_refused(
    token_server: ServerProcess, user_id: str, why: str
) -> None:
    client = await Client.connect(token_server.ws_url, token=token(user_id), expect_connected=False)
    try:
        error = (await client.recv("error"))["payload"]
        assert error["code"] == "unauthenticated", error
        assert why in error["message"], error
        await expect_close(client, 1008)
    finally:
        await client.close()
    status, body = await post_room(token_server, {"name": "r"}, token_for=user_id)
    refused(status, body, 401, "unauthenticated", "subject", why)


@pytest.mark.parametrize(("user_id", "why"), BAD_USER_IDS)
async def test_private_room_member_with_hidden_characters_is_refused(
    open_server: ServerProcess, user_id: str, why: str
) -> None:
    before = await all_rooms(open_server, "user_id=owner")
    body = {"name": "inner", "private": True, "members": ["bob", user_id]}
    status, answer = await post_room(open_server, body, user_id="owner")
    refused(status, answer, 400, "invalid_message", "body.members[1]", why)
    assert await all_rooms(open_server, "user_id=owner") == before


async def test_user_ids_are_one_user_however_they_are_written(open_server: ServerProcess) -> None:
    """NFD and NFC spellings name one user at every entry point."""
    zoe = await Client.connect(open_server.ws_url, NFD_NAME)
    caller = await Client.connect(open_server.ws_url, "caller-nfc")
    try:
        assert zoe.connected["user_id"] == NFC_NAME
        # A private room for zoë, with her named the other way round.
        status, room = await post_room(
            open_server, {"name": "z", "private": True, "members": [NFD_NAME]}, "caller-nfc"
        )
        assert status == 201, room
        assert room["members"] == sorted(["caller-nfc", NFC_NAME])
        for client in (zoe, caller):  # she is told of it, however she was named
            assert (await client.recv("room_created"))["payload"]["room"] == room
        # The payload may name her either way: it is her own name.
        await zoe.send("join_room", {"room_id": room["id"], "user_id": NFC_NAME})
        await zoe.recv("room_users")
        await caller.join(room["id"])
        await zoe.recv("user_joined")
        # A call to her, named the other way, rings her.
        await caller.send("webrtc", {"type": "offer", "to_user_id": NFD_NAME, "data": {}})
        ringing = (await zoe.recv("incoming_call"))["payload"]
        assert ringing["to_user_id"] == NFC_NAME
        # Over HTTP too: her calls, listed for her by either spelling.
        status, calls = await http_json(
            "GET", f"{open_server.http}/api/calls?user_id={quote(NFD_NAME)}"
        )
        assert status == 200, calls
        status, created = await post_room(open_server, {"name": "hers"}, user_id=NFD_NAME)
        assert (status, created["created_by"]) == (201, NFC_NAME), created
    finally:
        await zoe.close()
        await caller.close()


async def test_token_subject_is_kept_in_nfc(token_server: ServerProcess) -> None:
    client = await Client.connect(token_server.ws_url, token=token(NFD_NAME))
    try:
        assert client.connected["user_id"] == NFC_NAME
    finally:
        await client.close()
    status, room = await post_room(token_server, {"name": "t"}, token_for=NFD_NAME)
    assert (status, room["created_by"]) == (201, NFC_NAME), room


# -- room names ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "why"), BAD_ROOM_NAMES)
async def test_room_name_with_hidden_characters_or_blank_is_refused(
    open_server: ServerProcess, name: str, why: str
) -> None:
    before = await all_rooms(open_server)
    status, body = await post_room(open_server, {"name": name}, user_id="namer")
    refused(status, body, 400, "invalid_message", "body.name", why)
    assert await all_rooms(open_server) == before


async def test_room_names_are_kept_in_nfc(open_server: ServerProcess) -> None:
    status, room = await post_room(open_server, {"name": "Cafe\u0301 \U0001f375"}, user_id="namer")
    assert status == 201, room
    assert room["name"] == "Caf\u00e9 \U0001f375"
    [listed] = [r for r in await all_rooms(open_server) if r["id"] == room["id"]]
    assert listed["name"] == "Caf\u00e9 \U0001f375"
