"""Safe retries: a chat sent again with its ``client_msg_id`` is stored and broadcast once.

Refusals are checked for what did not happen too, as :mod:`tests.harness.pool` says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.chat import (
    CHAT_FIELDS,
    send_chat,
)
from tests.harness.http import history, stored
from tests.harness.pool import Pool, members
from tests.harness.server import ServerProcess

UserName = Callable[[str], str]
NewRoom = Callable[[], int]


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
