"""Every way a call ends: rejected, cancelled, hung up, timed out, busy, disconnected.

Fresh rooms and ``Client.sync()`` serve here as ``test_calls_ringing.py`` says.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.harness.calls import (
    ANSWER,
    answer,
    candidate,
    in_room,
    ring,
    send_offer,
    settle,
    signal,
    sync_all,
    uid,
)
from tests.harness.client import Client, Connect
from tests.harness.server import ServerProcess

User = Callable[[str], str]


async def test_callee_rejects_and_the_caller_and_other_tabs_are_told(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    bob_tab2: Client = await connect(user("bob"))
    call_id = await ring(alice, bob, bob_tab2)

    await bob_tab2.send("call_reject", {"call_id": call_id})
    rejected = {"call_id": call_id, "reason": "rejected"}
    assert (await alice.recv("call_ended"))["payload"] == rejected
    assert (await bob.recv("call_ended"))["payload"] == rejected
    await sync_all(alice, bob, bob_tab2)
    # The call is over and forgotten.
    await bob_tab2.send("call_reject", {"call_id": call_id})
    await bob_tab2.expect_error("not_found", "call_reject")


async def test_caller_cancels_a_ringing_call(connect: Connect, room_id: int, user: User) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    bob_tab2: Client = await connect(user("bob"))
    call_id = await ring(alice, bob, bob_tab2)

    await alice.send("call_end", {"call_id": call_id})
    ended = {"call_id": call_id, "reason": "ended", "by": user("alice")}
    assert (await bob.recv("call_ended"))["payload"] == ended
    assert (await bob_tab2.recv("call_ended"))["payload"] == ended
    await sync_all(alice, bob, bob_tab2)
    await alice.send("call_end", {"call_id": call_id})
    await alice.expect_error("not_found", "call_end")


@pytest.mark.parametrize("hangs_up", ["caller", "callee"])
async def test_either_party_ends_an_active_call(
    connect: Connect, room_id: int, user: User, hangs_up: str
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    bob_tab2: Client = await connect(user("bob"))
    call_id = await ring(alice, bob, bob_tab2)
    await answer(bob, alice, call_id)
    await bob_tab2.recv("call_ended")

    ender, other = (alice, bob) if hangs_up == "caller" else (bob, alice)
    await ender.send("call_end", {"call_id": call_id})
    assert (await other.recv("call_ended"))["payload"] == {
        "call_id": call_id,
        "reason": "ended",
        "by": uid(ender),
    }
    await sync_all(alice, bob, bob_tab2)
    # Both are free again: a new call rings.
    await ring(bob, alice, media=None)


async def test_ringing_times_out_with_no_answer(tuned_server: ServerProcess, user: User) -> None:
    clients = [
        await Client.connect(tuned_server.ws_url, name)
        for name in (user("alice"), user("bob"), user("bob"))
    ]
    alice, bob, bob_tab2 = clients
    try:
        await alice.join(1)
        await bob.join(1)
        await settle(alice, bob)
        started = time.monotonic()
        call_id = await ring(alice, bob, bob_tab2)
        no_answer = {"call_id": call_id, "reason": "no_answer"}
        assert (await alice.recv("call_ended", timeout=5))["payload"] == no_answer
        elapsed = time.monotonic() - started
        assert 0.4 <= elapsed < 3.0, elapsed
        assert (await bob.recv("call_ended"))["payload"] == no_answer
        assert (await bob_tab2.recv("call_ended"))["payload"] == no_answer
        await sync_all(alice, bob, bob_tab2)
        # The registry let go of both: a new call rings, and the old id is unknown.
        await signal(bob, "answer", call_id, user("alice"), ANSWER)
        await bob.expect_error("not_found", "webrtc")
        await ring(bob, alice)
    finally:
        for client in clients:
            await client.close()


async def test_calling_an_offline_user_is_unavailable_at_once(
    connect: Connect, room_id: int, user: User
) -> None:
    (alice,) = await in_room(connect, room_id, user("alice"))
    await send_offer(alice, user("nobody"))
    ended = (await alice.recv("call_ended"))["payload"]
    assert isinstance(ended["call_id"], str) and ended["call_id"]
    assert ended == {"call_id": ended["call_id"], "reason": "unavailable"}
    await alice.sync()


async def test_calling_a_user_in_a_call_or_ringing_is_busy(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob, carol = await in_room(connect, room_id, user("alice"), user("bob"), user("carol"))
    call_id = await ring(alice, bob)

    for callee in (user("bob"), user("alice")):  # ringing, as callee and as caller
        await send_offer(carol, callee)
        busy = (await carol.recv("call_ended"))["payload"]
        assert busy == {"call_id": busy["call_id"], "reason": "busy"}
        assert busy["call_id"] != call_id
        await sync_all(alice, bob)

    await answer(bob, alice, call_id)
    await send_offer(carol, user("bob"))  # in an active call
    busy = (await carol.recv("call_ended"))["payload"]
    assert busy == {"call_id": busy["call_id"], "reason": "busy"}
    await sync_all(alice, bob, carol)
    # The busy attempts left the real call alone.
    expected = await signal(alice, "ice_candidate", call_id, user("bob"), candidate(50007))
    assert (await bob.recv("webrtc"))["payload"] == expected


async def test_glare_refuses_the_later_call_and_the_earlier_keeps_ringing(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    call_id = await ring(alice, bob)

    await send_offer(bob, user("alice"))  # bob calls alice back before answering
    glare = (await bob.recv("call_ended"))["payload"]
    assert glare == {"call_id": glare["call_id"], "reason": "glare"}
    assert glare["call_id"] != call_id
    await sync_all(alice, bob)

    await answer(bob, alice, call_id)


async def test_a_party_disconnecting_ends_an_active_call(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    alice_tab2: Client = await connect(user("alice"))
    call_id = await ring(alice, bob)
    await answer(bob, alice, call_id)

    await alice_tab2.close()  # not part of the call
    await alice.sync()
    await bob.sync()

    await bob.close()
    ended = await alice.recv_until("call_ended")
    assert ended["payload"] == {"call_id": call_id, "reason": "disconnected"}


async def test_the_caller_disconnecting_ends_a_ringing_call(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    bob_tab2: Client = await connect(user("bob"))
    call_id = await ring(alice, bob, bob_tab2)

    await alice.close()
    disconnected = {"call_id": call_id, "reason": "disconnected"}
    assert (await bob.recv_until("call_ended"))["payload"] == disconnected
    assert (await bob_tab2.recv_until("call_ended"))["payload"] == disconnected


async def test_a_ringing_call_ends_only_when_its_last_ringing_tab_disconnects(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    bob_tab2: Client = await connect(user("bob"))
    bob_tab3: Client = await connect(user("bob"))
    call_id = await ring(alice, bob, bob_tab2, bob_tab3)

    # Tabs that go away stop ringing; the caller is not told, and a remaining tab can answer.
    await bob_tab3.close()
    await bob_tab2.close()
    # close() returns once the server replied to the close frame, and the server drops the
    # connection right after replying, so these pings are handled after both disconnects.
    await sync_all(alice, bob)
    await answer(bob, alice, call_id)
    await sync_all(alice, bob)


async def test_the_callee_closing_its_only_ringing_tab_ends_the_call(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    call_id = await ring(alice, bob)
    await bob.close()
    ended = await alice.recv_until("call_ended")
    assert ended["payload"] == {"call_id": call_id, "reason": "disconnected"}
