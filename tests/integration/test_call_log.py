"""The call log (``GET /api/calls``): each user's calls, newest first, with how they ended."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import jwt

from tests.harness.calls import (
    AUTH_SECRET,
    answer,
    in_room,
    list_calls,
    ring,
    send_offer,
)
from tests.harness.client import Connect
from tests.harness.http import http_json
from tests.harness.server import ServerProcess
from tests.harness.timing import now_ms

User = Callable[[str], str]


async def test_calls_are_listed_newest_first_with_how_they_ended(
    server: ServerProcess, connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    before = now_ms()
    answered_id = await ring(alice, bob)
    await answer(bob, alice, answered_id)
    await bob.send("call_end", {"call_id": answered_id})
    await alice.recv("call_ended")
    await asyncio.sleep(0.005)  # distinct started_at, so newest-first is well defined
    rejected_id = await ring(alice, bob)
    await bob.send("call_reject", {"call_id": rejected_id})
    await alice.recv("call_ended")
    await asyncio.sleep(0.005)
    await send_offer(alice, user("ghost"))
    unavailable_id = (await alice.recv("call_ended"))["payload"]["call_id"]
    after = now_ms()

    # Calls are logged in the background: wait until the last update is visible.
    deadline = time.monotonic() + 5
    calls = await list_calls(server, user("alice"))
    while not (len(calls) == 3 and all(c["ended_at"] for c in calls)):
        assert time.monotonic() < deadline, calls
        await asyncio.sleep(0.05)
        calls = await list_calls(server, user("alice"))

    assert [c["call_id"] for c in calls] == [unavailable_id, rejected_id, answered_id]
    for c in calls:
        assert set(c) == {
            "call_id", "caller", "callee", "started_at", "answered_at", "ended_at", "end_reason",
        }  # fmt: skip
        assert before <= c["started_at"] <= c["ended_at"] <= after, c
        assert c["caller"] == user("alice")
    unavailable, rejected, answered = calls
    assert unavailable["callee"] == user("ghost")
    assert (unavailable["answered_at"], unavailable["end_reason"]) == (None, "unavailable")
    assert rejected["callee"] == user("bob")
    assert (rejected["answered_at"], rejected["end_reason"]) == (None, "rejected")
    assert answered["callee"] == user("bob")
    assert answered["end_reason"] == "ended"
    assert answered["started_at"] <= answered["answered_at"] <= answered["ended_at"]
    assert answered["started_at"] < rejected["started_at"] < unavailable["started_at"]

    # Each party sees the calls they took part in, and only those.
    assert await list_calls(server, user("bob")) == [rejected, answered]
    assert await list_calls(server, user("ghost")) == [unavailable]
    assert await list_calls(server, user("carol")) == []


async def test_listing_another_users_calls_is_forbidden(auth_server: ServerProcess) -> None:
    token = jwt.encode({"sub": "alice"}, AUTH_SECRET, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{auth_server.http}/api/calls"
    status, body = await http_json("GET", f"{base}?user_id=bob", headers=headers)
    assert status == 403, body
    assert set(body) == {"error"} and body["error"]["code"] == "forbidden", body
    nothing = {"calls": [], "next": None}
    assert await http_json("GET", f"{base}?user_id=alice", headers=headers) == (200, nothing)
    assert await http_json("GET", base, headers=headers) == (200, nothing)
    status, body = await http_json("GET", f"{base}?user_id=alice")
    assert status == 401 and body["error"]["code"] == "unauthenticated", body
