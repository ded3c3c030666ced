"""Calls and signals the server refuses: no shared room, third parties, roles, ids, size.

Fresh rooms and ``Client.sync()`` serve here as ``test_calls_ringing.py`` says.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.harness.calls import (
    ANSWER,
    OFFER,
    RENEGOTIATE,
    answer,
    candidate,
    in_room,
    ring,
    send_offer,
    signal,
    sync_all,
)
from tests.harness.client import Client, Connect
from tests.harness.server import ServerProcess

User = Callable[[str], str]


async def test_calling_someone_you_share_no_room_with_is_forbidden(
    connect: Connect, room_id: int, new_room: Callable[[], int], user: User
) -> None:
    (alice,) = await in_room(connect, room_id, user("alice"))
    (dave,) = await in_room(connect, new_room(), user("dave"))
    await send_offer(alice, user("dave"))
    await alice.expect_error("forbidden", "webrtc")
    await sync_all(alice, dave)


async def test_calls_outside_rooms_ring_when_the_server_allows_them(
    tuned_server: ServerProcess, user: User
) -> None:
    alice = await Client.connect(tuned_server.ws_url, user("alice"))
    dave = await Client.connect(tuned_server.ws_url, user("dave"))
    try:
        call_id = await ring(alice, dave)
        await alice.send("call_end", {"call_id": call_id})
        assert (await dave.recv("call_ended"))["payload"] == {
            "call_id": call_id,
            "reason": "ended",
            "by": user("alice"),
        }
    finally:
        await alice.close()
        await dave.close()


async def test_a_third_party_cannot_signal_into_a_call(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob, carol = await in_room(connect, room_id, user("alice"), user("bob"), user("carol"))
    call_id = await ring(alice, bob)

    async def refused() -> None:
        for kind, data in (("ice_candidate", candidate(50008)), ("answer", ANSWER)):
            await signal(carol, kind, call_id, user("alice"), data)
            await carol.expect_error("forbidden", "webrtc")
        await carol.send("call_reject", {"call_id": call_id})
        await carol.expect_error("forbidden", "call_reject")
        await carol.send("call_end", {"call_id": call_id})
        await carol.expect_error("forbidden", "call_end")
        await sync_all(alice, bob)

    await refused()  # while it rings
    await answer(bob, alice, call_id)
    await refused()  # while it is active
    # The call is untouched.
    expected = await signal(bob, "ice_candidate", call_id, user("alice"), candidate(50009))
    assert (await alice.recv("webrtc"))["payload"] == expected


async def test_parties_cannot_take_each_others_role(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    call_id = await ring(alice, bob)
    # The caller cannot answer or reject its own call; no renegotiation before an answer.
    await signal(alice, "answer", call_id, user("bob"), ANSWER)
    await alice.expect_error("forbidden", "webrtc")
    await alice.send("call_reject", {"call_id": call_id})
    await alice.expect_error("forbidden", "call_reject")
    await signal(bob, "offer", call_id, user("alice"), RENEGOTIATE)
    await bob.expect_error("forbidden", "webrtc")
    await sync_all(alice, bob)
    await answer(bob, alice, call_id)


async def test_unknown_call_ids_are_not_found(connect: Connect, room_id: int, user: User) -> None:
    alice, _bob = await in_room(connect, room_id, user("alice"), user("bob"))
    for kind, data in (("answer", ANSWER), ("ice_candidate", candidate(1)), ("offer", OFFER)):
        await signal(alice, kind, "no-such-call", user("bob"), data)
        await alice.expect_error("not_found", "webrtc")
    await alice.send("call_end", {"call_id": "no-such-call"})
    await alice.expect_error("not_found", "call_end")
    await alice.send("call_reject", {"call_id": "no-such-call"})
    await alice.expect_error("not_found", "call_reject")


async def test_signal_data_over_32_kib_is_too_large(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    limit = 32 * 1024
    await send_offer(alice, user("bob"), data="x" * (limit - 1))  # limit + 1 bytes as JSON
    await alice.expect_error("too_large", "webrtc")
    await sync_all(alice, bob)

    at_limit = "x" * (limit - 2)  # exactly 32 KiB of JSON: accepted
    await send_offer(alice, user("bob"), data=at_limit)
    call_id = (await alice.recv("call_ringing"))["payload"]["call_id"]
    await bob.recv("incoming_call")
    assert (await bob.recv("webrtc"))["payload"]["data"] == at_limit

    await signal(alice, "ice_candidate", call_id, user("bob"), "y" * limit)
    await alice.expect_error("too_large", "webrtc")
    await sync_all(alice, bob)
