"""Calls over real WebSockets: ringing, answering, relaying, and every way a call ends.

Each test puts its users in a fresh room (calls need a shared room), so calls on
the shared server never meet. ``Client.sync()`` (ping, then the very next frame
must be the pong) proves a connection was sent nothing else: it is called only
after the frame that shows the server has handled the request in question.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import jwt
import pytest

from tests.harness.client import Client
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

Connect = Callable[..., Awaitable[Client]]
User = Callable[[str], str]

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
RENEGOTIATE = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
REANSWER = {"type": "answer", "sdp": "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
MEDIA = {"audio": True, "video": False}
TURN_SECRET = "s"
AUTH_SECRET = "call-tests-secret-of-at-least-32-bytes!"


def candidate(port: int) -> dict[str, Any]:
    return {
        "candidate": f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }


# -- servers with non-default settings -----------------------------------------------------


@pytest.fixture(scope="module")
def tuned_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Short ringing, calls outside rooms allowed, STUN and TURN configured."""
    database = tmp_path_factory.mktemp("calls-tuned") / "roomcast.db"
    process = ServerProcess(
        database,
        "--ring-timeout", "0.5",
        "--allow-calls-outside-rooms",
        "--stun-urls", "stun:a,stun:b",
        "--turn-urls", "turn:t:3478",
        "--turn-secret", TURN_SECRET,
        "--turn-ttl", "600",
    ).start()  # fmt: skip
    yield process
    process.stop()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database = tmp_path_factory.mktemp("calls-auth") / "roomcast.db"
    process = ServerProcess(database, "--auth-secret", AUTH_SECRET).start()
    yield process
    process.stop()


# -- helpers -------------------------------------------------------------------------------


def uid(client: Client) -> str:
    return str(client.connected["user_id"])


async def settle(*clients: Client) -> None:
    """Drop whatever each client has been sent so far (user_joined and the like)."""
    for client in clients:
        await client.send("ping")
        await client.recv_until("pong")


async def in_room(connect: Connect, room_id: int, *user_ids: str) -> list[Client]:
    """One connection per user id, all joined to ``room_id``, with nothing left to read."""
    clients = [await connect(user_id) for user_id in user_ids]
    for client in clients:
        await client.join(room_id)
    await settle(*clients)
    return clients


async def send_offer(caller: Client, callee_id: str, data: Any = OFFER, media: Any = None) -> None:
    payload: dict[str, Any] = {"type": "offer", "to_user_id": callee_id, "data": data}
    if media is not None:
        payload["media"] = media
    await caller.send("webrtc", payload)


async def ring(caller: Client, *callee_conns: Client, media: Any = None) -> str:
    """``caller`` calls the user of ``callee_conns``; all of them ring. Returns the call id."""
    caller_id, callee_id = uid(caller), uid(callee_conns[0])
    await send_offer(caller, callee_id, media=media)
    ringing = (await caller.recv("call_ringing"))["payload"]
    call_id = ringing["call_id"]
    assert isinstance(call_id, str) and call_id
    parties = {"call_id": call_id, "from_user_id": caller_id, "to_user_id": callee_id}
    assert ringing == {**parties, "media": media}
    for conn in callee_conns:
        assert (await conn.recv("incoming_call"))["payload"] == {**parties, "media": media}
        assert (await conn.recv("webrtc"))["payload"] == {"type": "offer", **parties, "data": OFFER}
    return call_id


async def answer(callee: Client, caller: Client, call_id: str) -> None:
    """``callee`` answers; the caller gets the answer, then both get call_active."""
    caller_id, callee_id = uid(caller), uid(callee)
    await callee.send(
        "webrtc", {"type": "answer", "call_id": call_id, "to_user_id": caller_id, "data": ANSWER}
    )
    relayed = (await caller.recv("webrtc"))["payload"]
    assert relayed == {
        "type": "answer",
        "call_id": call_id,
        "from_user_id": callee_id,
        "to_user_id": caller_id,
        "data": ANSWER,
    }
    active = {"call_id": call_id, "from_user_id": caller_id, "to_user_id": callee_id}
    assert (await caller.recv("call_active"))["payload"] == active
    assert (await callee.recv("call_active"))["payload"] == active


async def signal(
    sender: Client, kind: str, call_id: str, to_user_id: str, data: Any
) -> dict[str, Any]:
    """Send one in-call signal; returns the payload a receiver should get."""
    await sender.send(
        "webrtc", {"type": kind, "call_id": call_id, "to_user_id": to_user_id, "data": data}
    )
    return {
        "type": kind,
        "call_id": call_id,
        "from_user_id": uid(sender),
        "to_user_id": to_user_id,
        "data": data,
    }


async def recv_text(client: Client, timeout: float = 3.0) -> str:
    message = await asyncio.wait_for(client.ws.receive(), timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    text: str = message.data
    return text


async def sync_all(*clients: Client) -> None:
    for client in clients:
        await client.sync()


async def list_calls(server: ServerProcess, user_id: str) -> list[dict[str, Any]]:
    status, body = await http_json("GET", f"{server.http}/api/calls?user_id={user_id}")
    assert status == 200, body
    assert set(body) == {"calls", "next"} and body["next"] is None, body
    calls: list[dict[str, Any]] = body["calls"]
    return calls


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- ringing ---------------------------------------------------------------------------


async def test_offer_rings_the_caller_and_every_callee_connection(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    alice_tab2: Client = await connect(user("alice"))
    bob_tab2: Client = await connect(user("bob"))  # not in the room: rings all the same
    await alice.send("webrtc", {"type": "offer", "to_user_id": user("bob"), "data": OFFER})
    ringing = await alice.recv("call_ringing")
    call_id = ringing["payload"]["call_id"]
    assert isinstance(call_id, str) and call_id
    parties = {"call_id": call_id, "from_user_id": user("alice"), "to_user_id": user("bob")}
    assert ringing["payload"] == {**parties, "media": None}
    for tab in (bob, bob_tab2):
        assert (await tab.recv("incoming_call"))["payload"] == {**parties, "media": None}
        assert (await tab.recv("webrtc"))["payload"] == {"type": "offer", **parties, "data": OFFER}
    # Only the offering connection is the caller side; the caller's other tab hears nothing.
    await sync_all(alice, alice_tab2, bob, bob_tab2)


async def test_offer_media_is_passed_on_byte_for_byte(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    media = '{"video" : true,"audio":false, "x":[1 ,2.50]}'
    to = json.dumps(user("bob"))
    await alice.send_raw(
        f'{{"type":"webrtc","payload":{{"type":"offer","to_user_id":{to},'
        f'"data":{{}},"media":{media}}}}}'
    )
    ringing = await recv_text(alice)
    assert json.loads(ringing)["type"] == "call_ringing", ringing
    assert f'"media":{media}}}' in ringing
    incoming = await recv_text(bob)
    assert json.loads(incoming)["type"] == "incoming_call", incoming
    assert f'"media":{media}}}' in incoming
    call_id = json.loads(ringing)["payload"]["call_id"]
    assert (await bob.recv("webrtc"))["payload"]["data"] == {}
    await alice.send("call_end", {"call_id": call_id})
    await bob.recv("call_ended")
    # Parsed, it is the same object in both, alongside the parties.
    await ring(alice, bob, media=MEDIA)


async def test_signal_data_is_relayed_byte_for_byte(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    # Odd spacing, key order, escapes and number spelling: a re-encoding would change them.
    data = '{ "sdp" : "v=0\\r\\na=x\\u00e9" ,"type":"offer", "n": 1.50e0, "z":[1 ,{}] }'
    to = json.dumps(user("bob"))
    await alice.send_raw(
        f'{{"type":"webrtc","payload":{{"type":"offer","to_user_id":{to},"data":{data}}}}}'
    )
    ringing = await recv_text(alice)
    call_id = json.loads(ringing)["payload"]["call_id"]
    incoming = await recv_text(bob)
    assert json.loads(incoming)["type"] == "incoming_call"
    offer = await recv_text(bob)
    assert json.loads(offer)["type"] == "webrtc"
    assert f'"data":{data}}}' in offer

    answer_data = '{"type" :"answer",  "sdp":"v=0\\r\\n"}'
    await bob.send_raw(
        f'{{"type":"webrtc","payload":{{"type":"answer","call_id":"{call_id}",'
        f'"to_user_id":{json.dumps(user("alice"))},"data":{answer_data}}}}}'
    )
    relayed = await recv_text(alice)
    assert json.loads(relayed)["type"] == "webrtc"
    assert f'"data":{answer_data}}}' in relayed


# -- answering -------------------------------------------------------------------------


async def test_answer_goes_to_the_offering_connection_and_other_tabs_stop_ringing(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    alice_tab2: Client = await connect(user("alice"))
    bob_tab2: Client = await connect(user("bob"))
    call_id = await ring(alice, bob, bob_tab2)

    await answer(bob_tab2, alice, call_id)
    assert (await bob.recv("call_ended"))["payload"] == {
        "call_id": call_id,
        "reason": "answered_elsewhere",
    }
    await sync_all(alice, alice_tab2, bob, bob_tab2)


async def test_a_call_can_be_answered_once(connect: Connect, room_id: int, user: User) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    bob_tab2: Client = await connect(user("bob"))
    call_id = await ring(alice, bob, bob_tab2)
    await answer(bob, alice, call_id)
    await bob_tab2.recv("call_ended")
    # The other tab answering too: it is no longer part of the call.
    await signal(bob_tab2, "answer", call_id, user("alice"), ANSWER)
    await bob_tab2.expect_error("forbidden", "webrtc")
    await sync_all(alice, bob)


# -- relaying ----------------------------------------------------------------------------


async def test_ice_candidates_while_ringing_go_between_caller_and_ringing_connections(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    alice_tab2: Client = await connect(user("alice"))
    bob_tab2: Client = await connect(user("bob"))
    call_id = await ring(alice, bob, bob_tab2)

    expected = await signal(alice, "ice_candidate", call_id, user("bob"), candidate(50001))
    assert (await bob.recv("webrtc"))["payload"] == expected
    assert (await bob_tab2.recv("webrtc"))["payload"] == expected

    expected = await signal(bob_tab2, "ice_candidate", call_id, user("alice"), candidate(50002))
    assert (await alice.recv("webrtc"))["payload"] == expected
    await sync_all(alice, alice_tab2, bob, bob_tab2)


async def test_after_answer_signals_flow_only_between_the_two_call_connections(
    connect: Connect, room_id: int, user: User
) -> None:
    alice, bob = await in_room(connect, room_id, user("alice"), user("bob"))
    alice_tab2: Client = await connect(user("alice"))
    bob_tab2: Client = await connect(user("bob"))
    call_id = await ring(alice, bob, bob_tab2)
    await answer(bob, alice, call_id)
    await bob_tab2.recv("call_ended")

    expected = await signal(alice, "ice_candidate", call_id, user("bob"), candidate(50003))
    assert (await bob.recv("webrtc"))["payload"] == expected
    expected = await signal(bob, "ice_candidate", call_id, user("alice"), candidate(50004))
    assert (await alice.recv("webrtc"))["payload"] == expected

    # Renegotiation (e.g. adding video) is an offer with the call id, relayed like the rest,
    # and its answer neither re-activates nor ends the call.
    expected = await signal(alice, "offer", call_id, user("bob"), RENEGOTIATE)
    assert (await bob.recv("webrtc"))["payload"] == expected
    expected = await signal(bob, "answer", call_id, user("alice"), REANSWER)
    assert (await alice.recv("webrtc"))["payload"] == expected
    await sync_all(alice, alice_tab2, bob, bob_tab2)

    # The caller's other tab and the tab that did not answer are not part of the call.
    await signal(alice_tab2, "ice_candidate", call_id, user("bob"), candidate(50005))
    await alice_tab2.expect_error("forbidden", "webrtc")
    await signal(bob_tab2, "ice_candidate", call_id, user("alice"), candidate(50006))
    await bob_tab2.expect_error("forbidden", "webrtc")
    await sync_all(alice, bob)


# -- ending ------------------------------------------------------------------------------


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


# -- refusals --------------------------------------------------------------------------


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


# -- the call log --------------------------------------------------------------------------


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


# -- ICE servers ----------------------------------------------------------------------------


async def test_ice_servers_hand_out_stun_and_a_time_limited_turn_credential(
    tuned_server: ServerProcess,
) -> None:
    before = int(time.time())
    status, body = await http_json("GET", f"{tuned_server.http}/api/ice-servers?user_id=u")
    after = int(time.time())
    assert status == 200, body
    stun, turn = body["iceServers"]
    assert stun == {"urls": ["stun:a", "stun:b"]}
    assert set(turn) == {"urls", "username", "credential"}
    assert turn["urls"] == ["turn:t:3478"]
    expiry, _, name = turn["username"].partition(":")
    assert name == "u"
    assert before + 600 <= int(expiry) <= after + 600
    digest = hmac.new(TURN_SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
    assert turn["credential"] == base64.b64encode(digest).decode()


async def test_ice_servers_are_empty_by_default_and_need_a_user(server: ServerProcess) -> None:
    assert await http_json("GET", f"{server.http}/api/ice-servers?user_id=u") == (
        200,
        {"iceServers": []},
    )
    status, body = await http_json("GET", f"{server.http}/api/ice-servers")
    assert status == 401 and body["error"]["code"] == "unauthenticated", body
