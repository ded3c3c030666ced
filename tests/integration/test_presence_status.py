"""Richer presence: chosen statuses with a text and an end, do-not-disturb,
automatic away after a quiet spell, and when a user was last active."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from tests.harness.client import Client
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

UserName = Callable[[str], str]


@pytest.fixture(scope="module")
def quick_away(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database = tmp_path_factory.mktemp("presence") / "roomcast.db"
    process = ServerProcess(database, "--away-after", "0.6", "--rate-limits", "off").start()
    yield process
    process.stop()


async def pair(server: ServerProcess, user: UserName, room_id: int) -> tuple[Client, Client]:
    alice = await Client.connect(server.ws_url, user("alice"))
    bob = await Client.connect(server.ws_url, user("bob"))
    await alice.join(room_id)
    await bob.join(room_id)
    await alice.recv("user_joined")
    return alice, bob


async def presence_of(client: Client, user_id: str, timeout: float = 3.0) -> dict[str, object]:
    while True:
        payload: dict[str, object] = (await client.recv_until("presence", timeout))["payload"]
        if payload["user_id"] == user_id:
            return payload


async def test_a_chosen_status_with_text_ends_by_itself(
    quick_away: ServerProcess, user: UserName, room_id: int
) -> None:
    alice, bob = await pair(quick_away, user, room_id)
    try:
        until = int(time.time() * 1000) + 400
        await bob.send(
            "presence", {"status": "dnd", "status_text": " In  a\nmeeting ", "until": until}
        )
        shown = await presence_of(alice, user("bob"))
        assert (shown["status"], shown["status_text"]) == ("dnd", "In a meeting")
        status, listed = await http_json("GET", f"{quick_away.http}/api/rooms/{room_id}/users")
        assert status == 200
        assert {u["user_id"]: (u["status"], u.get("status_text")) for u in listed["users"]}[
            user("bob")
        ] == ("dnd", "In a meeting")
        ended = await presence_of(alice, user("bob"), timeout=3)
        assert ended["status"] in ("online", "away") and "status_text" not in ended
    finally:
        await alice.close()
        await bob.close()


async def test_a_quiet_user_goes_away_and_comes_back_with_activity(
    quick_away: ServerProcess, user: UserName, room_id: int
) -> None:
    alice, bob = await pair(quick_away, user, room_id)
    try:
        away = await presence_of(alice, user("bob"))
        assert away["status"] == "away"
        await bob.send("activity")
        back = await presence_of(alice, user("bob"))
        assert back["status"] == "online" and isinstance(back["last_active_at"], int)
        # Away again; then a message is activity too.
        assert (await presence_of(alice, user("bob")))["status"] == "away"
        await bob.send("chat", {"room_id": room_id, "content": "here"})
        assert (await presence_of(alice, user("bob")))["status"] == "online"
    finally:
        await alice.close()
        await bob.close()


async def test_a_chosen_status_is_never_overridden_by_away(
    quick_away: ServerProcess, user: UserName, room_id: int
) -> None:
    alice, bob = await pair(quick_away, user, room_id)
    try:
        await bob.send("presence", {"status": "busy"})
        assert (await presence_of(alice, user("bob")))["status"] == "busy"
        await asyncio.sleep(1.0)  # past --away-after
        status, listed = await http_json("GET", f"{quick_away.http}/api/rooms/{room_id}/users")
        assert status == 200
        assert {u["user_id"]: u["status"] for u in listed["users"]}[user("bob")] == "busy"
        # Back to automatic: bob has been quiet, so away.
        await bob.send("presence", {"status": "online"})
        assert (await presence_of(alice, user("bob")))["status"] == "away"
    finally:
        await alice.close()
        await bob.close()


async def test_bad_presence_is_refused_and_changes_nothing(
    quick_away: ServerProcess, user: UserName, room_id: int
) -> None:
    alice, bob = await pair(quick_away, user, room_id)
    try:
        past = int(time.time() * 1000) - 1000
        cases = [
            ({"status": "busy", "until": past}, "until"),
            ({"status": "online", "until": past + 10**7}, "until"),
            ({"status": "busy", "status_text": "x" * 101}, "status_text"),
            ({"status": "busy", "status_text": "a\u202eb"}, "status_text"),
            ({"status": "sleeping"}, "status"),
        ]
        for payload, field in cases:
            await bob.send("presence", payload)
            error = await bob.expect_error("invalid_message", "presence")
            assert field in error["message"], error
        status, listed = await http_json("GET", f"{quick_away.http}/api/rooms/{room_id}/users")
        assert status == 200
        assert {u["user_id"]: u["status"] for u in listed["users"]}[user("bob")] in (
            "online",
            "away",
        )
    finally:
        await alice.close()
        await bob.close()


async def test_do_not_disturb_makes_notifications_quiet(
    quick_away: ServerProcess, user: UserName
) -> None:
    alice_id, bob_id = user("alice"), user("bob")
    url = f"{quick_away.http}/api/rooms?user_id={alice_id}"
    status, room = await http_json(
        "POST", url, {"name": "dnd", "private": True, "members": [bob_id]}
    )
    assert status == 201
    alice = await Client.connect(quick_away.ws_url, alice_id)
    bob = await Client.connect(quick_away.ws_url, bob_id)
    try:
        await alice.join(room["id"])
        await bob.send("presence", {"status": "dnd"})
        await bob.recv_until("presence")
        await alice.send("chat", {"room_id": room["id"], "content": "hey", "mentions": [bob_id]})
        assert (await bob.recv_until("notification"))["payload"]["quiet"] is True
    finally:
        await alice.close()
        await bob.close()
