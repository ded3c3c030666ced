"""Resuming a room with ``join_room`` ``since``: every missed message once, then live ones.

Refusals are checked for what did not happen too, as :mod:`tests.harness.pool` says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.harness.chat import (
    send_chat,
)
from tests.harness.http import history, history_page, stored
from tests.harness.pool import Pool, members
from tests.harness.server import ServerProcess

UserName = Callable[[str], str]
NewRoom = Callable[[], int]


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
