"""Calls over real WebSockets: ringing, answering, and relaying signals between the parties.

Each test puts its users in a fresh room (calls need a shared room), so calls on
the shared server never meet. ``Client.sync()`` (ping, then the very next frame
must be the pong) proves a connection was sent nothing else: it is called only
after the frame that shows the server has handled the request in question.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.harness.calls import (
    ANSWER,
    MEDIA,
    OFFER,
    REANSWER,
    RENEGOTIATE,
    answer,
    candidate,
    in_room,
    recv_text,
    ring,
    signal,
    sync_all,
)
from tests.harness.client import Client, Connect

User = Callable[[str], str]


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
