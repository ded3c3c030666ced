"""Chat messages, their order, and edits, deletions and reactions, against a real server."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.client import Client, Connect
from tests.harness.http import history, stored
from tests.harness.server import ServerProcess
from tests.harness.timing import now_ms

CHAT_FIELDS = {
    "id", "room_id", "user_id", "content", "type", "created_at", "thread_id", "mentions"
}  # fmt: skip


async def send_chat(client: Client, room_id: int, content: str) -> None:
    await client.send("chat", {"room_id": room_id, "content": content, "type": "text"})


async def two_members(
    connect: Connect, room_id: int, user: Callable[[str], str]
) -> tuple[Client, Client]:
    alice = await connect(user("alice"))
    bob = await connect(user("bob"))
    await alice.join(room_id)
    await bob.join(room_id)
    await alice.recv("user_joined")
    return alice, bob


async def test_chat_goes_to_every_member_connection_including_the_sender(
    server: ServerProcess, connect: Connect, new_room: Callable[[], int], user: Callable[[str], str]
) -> None:
    room_id, other_room = new_room(), new_room()
    alice_1 = await connect(user("alice"))
    alice_2 = await connect(user("alice"))
    alice_elsewhere = await connect(user("alice"))
    bob = await connect(user("bob"))
    carol = await connect(user("carol"))
    for member in (alice_1, alice_2, bob):
        await member.join(room_id)
    await alice_elsewhere.join(other_room)
    await carol.join(other_room)
    for member in (alice_1, alice_2, alice_elsewhere):
        await member.recv("user_joined")  # bob, bob and carol

    before = now_ms()
    await send_chat(alice_1, room_id, "hello room")
    frame = await alice_1.recv("chat")
    message = frame["payload"]
    assert set(message) == CHAT_FIELDS
    assert isinstance(message["id"], int) and message["id"] >= 1
    assert {k: v for k, v in message.items() if k not in ("id", "created_at")} == {
        "room_id": room_id,
        "user_id": user("alice"),
        "content": "hello room",
        "type": "text",
        "thread_id": None,
        "mentions": [],
    }
    assert before - 1000 <= message["created_at"] <= now_ms() + 1000
    for member in (alice_2, bob):
        assert (await member.recv("chat"))["payload"] == message
    # Connections outside the room, even the sender's own, get nothing.
    for outsider in (alice_elsewhere, carol, alice_1, alice_2, bob):
        await outsider.sync()
    assert await history(server, room_id) == [stored(message)]
    assert await history(server, other_room) == []


async def test_chat_ids_increase_and_history_matches(
    server: ServerProcess, connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice, bob = await two_members(connect, room_id, user)
    sent = []
    for sender, content in [(alice, "one"), (bob, "two"), (alice, "three")]:
        await send_chat(sender, room_id, content)
        message = (await alice.recv("chat"))["payload"]
        assert (await bob.recv("chat"))["payload"] == message
        sent.append(message)
    ids = [message["id"] for message in sent]
    assert ids == sorted(set(ids))
    assert [m["content"] for m in sent] == ["one", "two", "three"]
    assert [m["user_id"] for m in sent] == [user("alice"), user("bob"), user("alice")]
    assert await history(server, room_id) == [stored(m) for m in sent]


async def skip_until_pong(client: Client) -> None:
    """Drop whatever is queued for the client (join announcements)."""
    await client.send("ping")
    await client.recv_until("pong")


async def test_concurrent_senders_every_client_sees_one_order(
    server: ServerProcess, connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    senders_count, per_sender = 5, 60
    names = [user(f"s{i}") for i in range(senders_count)]
    senders = [await connect(name) for name in names]
    watcher = await connect(user("watcher"))
    second_tab = await connect(names[0])
    clients = [*senders, watcher, second_tab]
    for client in clients:
        await client.join(room_id)
    for client in clients:
        await skip_until_pong(client)
    late = await connect(user("late"))  # joins in the middle of the stream

    total = senders_count * per_sender

    async def send_all(index: int, numbers: range) -> None:
        for n in numbers:
            await send_chat(senders[index], room_id, f"{index}:{n}")
            if n % 7 == 0:
                await asyncio.sleep(0)  # interleave the senders

    async def send_phase(numbers: range) -> None:
        await asyncio.gather(*(send_all(i, numbers) for i in range(senders_count)))

    async def receive_all(client: Client) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while len(messages) < total:
            frame = await client.next(timeout=10)
            if frame["type"] == "user_joined":
                assert frame["payload"] == {"room_id": room_id, "user_id": user("late")}
            else:
                assert frame["type"] == "chat", frame
                messages.append(frame["payload"])
        return messages

    receivers = [asyncio.create_task(receive_all(client)) for client in clients]
    third = per_sender // 3
    await send_phase(range(third))
    await late.send("join_room", {"room_id": room_id})
    await send_phase(range(third, 2 * third))
    assert (await late.recv("room_users"))["payload"]["room_id"] == room_id
    await send_phase(range(2 * third, per_sender))  # certainly after the late join
    seen = await asyncio.gather(*receivers)

    reference = seen[0]
    ids = [message["id"] for message in reference]
    assert all(a < b for a, b in itertools.pairwise(ids)), "ids not strictly increasing"
    expected = Counter(
        (names[i], f"{i}:{n}") for i in range(senders_count) for n in range(per_sender)
    )
    assert Counter((m["user_id"], m["content"]) for m in reference) == expected  # no loss, no dupes
    for i in range(senders_count):  # each sender's messages keep its sending order
        own = [m["content"] for m in reference if m["user_id"] == names[i]]
        assert own == [f"{i}:{n}" for n in range(per_sender)]
    for client_seen in seen[1:]:
        assert client_seen == reference
    for client in clients:
        await client.sync()  # nothing beyond the expected messages

    # The late joiner sees an unbroken tail of the same sequence.
    tail: list[dict[str, Any]] = []
    while not tail or tail[-1]["id"] != ids[-1]:
        tail.append((await late.recv("chat"))["payload"])
    assert len(tail) >= senders_count * (per_sender - 2 * third)
    assert tail == reference[-len(tail) :]
    await late.sync()

    assert await history(server, room_id) == [stored(m) for m in reference]


async def test_typing_ends_before_each_message_under_load(
    connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    senders_count, per_sender = 4, 40
    names = [user(f"s{i}") for i in range(senders_count)]
    senders = [await connect(name) for name in names]
    watcher = await connect(user("watcher"))
    clients = [*senders, watcher]
    for client in clients:
        await client.join(room_id)
    for client in clients:
        await skip_until_pong(client)

    async def send_all(index: int) -> None:
        for n in range(per_sender):
            await senders[index].send("typing", {"room_id": room_id, "is_typing": True})
            await send_chat(senders[index], room_id, f"{index}:{n}")
            if n % 5 == 0:
                await asyncio.sleep(0)

    async def receive_all(client: Client) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        chats = 0
        while chats < senders_count * per_sender:
            frame = await client.next(timeout=10)
            assert frame["type"] in ("chat", "typing"), frame
            chats += frame["type"] == "chat"
            frames.append(frame)
        return frames

    receivers = [asyncio.create_task(receive_all(client)) for client in clients]
    await asyncio.gather(*(send_all(i) for i in range(senders_count)))
    streams = await asyncio.gather(*receivers)
    chat_streams = [[f["payload"] for f in stream if f["type"] == "chat"] for stream in streams]
    assert all(stream == chat_streams[0] for stream in chat_streams)

    for client, stream in zip(clients, streams, strict=True):
        typing_state: dict[str, bool] = {}
        for frame in stream:
            payload = frame["payload"]
            author = payload["user_id"]
            if frame["type"] == "typing":
                assert author != client.connected["user_id"], "own typing echoed"
                assert payload["room_id"] == room_id
                # true and false alternate: a repeated true is never re-sent
                assert typing_state.get(author, False) != payload["is_typing"], stream
                typing_state[author] = payload["is_typing"]
            else:
                # the author's typing ended before their message arrived
                assert not typing_state.get(author, False), (author, payload["id"])
    for client in clients:
        await client.sync()


async def test_chat_from_a_non_member_is_forbidden_and_not_stored(
    server: ServerProcess, connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice = await connect(user("alice"))
    mallory = await connect(user("mallory"))
    await alice.join(room_id)
    message = await alice.chat(room_id, "members only")
    await send_chat(mallory, room_id, "let me in")
    error = await mallory.expect_error("forbidden", "chat")
    assert set(error) == {"code", "message", "type"}
    await alice.sync()
    assert await history(server, room_id) == [stored(message)]


async def test_edit_by_the_author_reaches_members_and_history(
    server: ServerProcess, connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice, bob = await two_members(connect, room_id, user)
    message = await alice.chat(room_id, "helo")
    await bob.recv("chat")
    before = now_ms()
    await alice.send("message_edit", {"message_id": message["id"], "content": "hello"})
    edit = (await alice.recv("message_edit"))["payload"]
    assert set(edit) == {"message_id", "room_id", "content", "edited_at", "thread_id", "mentions"}
    assert (edit["message_id"], edit["room_id"], edit["content"]) == (
        message["id"],
        room_id,
        "hello",
    )
    assert before - 1000 <= edit["edited_at"] <= now_ms() + 1000
    assert (await bob.recv("message_edit"))["payload"] == edit
    assert await history(server, room_id) == [
        stored(message, content="hello", edited_at=edit["edited_at"])
    ]


@pytest.mark.parametrize(
    ("request_type", "payload"),
    [("message_edit", {"content": "not yours"}), ("message_delete", {})],
)
async def test_edit_or_delete_by_another_member_is_forbidden(
    server: ServerProcess,
    connect: Connect,
    room_id: int,
    user: Callable[[str], str],
    request_type: str,
    payload: dict[str, Any],
) -> None:
    alice, bob = await two_members(connect, room_id, lambda name: user(f"{name}-{request_type}"))
    message = await alice.chat(room_id, "mine")
    await bob.recv("chat")
    await bob.send(request_type, {"message_id": message["id"], **payload})
    await bob.expect_error("forbidden", request_type)
    await alice.sync()
    await bob.sync()
    assert await history(server, room_id) == [stored(message)]


async def test_delete_by_the_author_removes_the_message_from_history(
    server: ServerProcess, connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice, bob = await two_members(connect, room_id, user)
    kept = await alice.chat(room_id, "keep me")
    doomed = await alice.chat(room_id, "delete me")
    await bob.recv("chat")
    await bob.recv("chat")
    await alice.send("message_delete", {"message_id": doomed["id"]})
    deleted = {"message_id": doomed["id"], "room_id": room_id, "by": user("alice")}
    assert (await alice.recv("message_delete"))["payload"] == deleted
    assert (await bob.recv("message_delete"))["payload"] == deleted
    assert await history(server, room_id) == [stored(kept)]
    # A deleted message is gone for every later operation.
    for request_type, payload in [
        ("message_edit", {"content": "resurrect"}),
        ("message_delete", {}),
        ("message_reaction", {"emoji": "👍"}),
    ]:
        await alice.send(request_type, {"message_id": doomed["id"], **payload})
        await alice.expect_error("not_found", request_type)
    await bob.sync()


@pytest.mark.parametrize(
    ("request_type", "payload"),
    [
        ("message_edit", {"content": "x"}),
        ("message_delete", {}),
        ("message_reaction", {"emoji": "🎉"}),
    ],
)
async def test_edit_delete_or_react_to_unknown_message_is_not_found(
    connect: Connect,
    room_id: int,
    user: Callable[[str], str],
    request_type: str,
    payload: dict[str, Any],
) -> None:
    alice = await connect(user(f"alice-{request_type}"))
    await alice.join(room_id)
    await alice.send(request_type, {"message_id": 2**53 - 1, **payload})
    await alice.expect_error("not_found", request_type)


async def test_reaction_toggles_added_then_removed(
    server: ServerProcess, connect: Connect, room_id: int, user: Callable[[str], str]
) -> None:
    alice, bob = await two_members(connect, room_id, user)
    message = await alice.chat(room_id, "react to me")
    await bob.recv("chat")

    def reaction(who: str, emoji: str, action: str) -> dict[str, Any]:
        return {
            "message_id": message["id"],
            "room_id": room_id,
            "user_id": who,
            "emoji": emoji,
            "action": action,
        }

    await bob.send("message_reaction", {"message_id": message["id"], "emoji": "👍"})
    for member in (alice, bob):
        assert (await member.recv("message_reaction"))["payload"] == reaction(
            user("bob"), "👍", "added"
        )
    await alice.send("message_reaction", {"message_id": message["id"], "emoji": "👍"})
    for member in (alice, bob):
        assert (await member.recv("message_reaction"))["payload"] == reaction(
            user("alice"), "👍", "added"
        )
    [item] = await history(server, room_id)
    assert {emoji: sorted(who) for emoji, who in item["reactions"].items()} == {
        "👍": sorted([user("alice"), user("bob")])
    }
    assert item == stored(message, reactions=item["reactions"])

    await bob.send("message_reaction", {"message_id": message["id"], "emoji": "👍"})
    for member in (alice, bob):
        assert (await member.recv("message_reaction"))["payload"] == reaction(
            user("bob"), "👍", "removed"
        )
    assert await history(server, room_id) == [stored(message, reactions={"👍": [user("alice")]})]
