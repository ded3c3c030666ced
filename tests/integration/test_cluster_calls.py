"""Calls across nodes: ringing, answering, signalling and ending between nodes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.harness.calls import answer, candidate, offer_refused, ring
from tests.harness.calls import signal as signal_to
from tests.harness.cluster import (
    ROOM,
    Cluster,
    barrier,
    drain,
    joined,
    presence,
)
from tests.harness.http import http_json
from tests.harness.server import ServerProcess


async def list_calls(server: ServerProcess, user_id: str) -> list[dict[str, Any]]:
    status, body = await http_json("GET", f"{server.http}/api/calls?user_id={user_id}")
    assert status == 200, body
    calls: list[dict[str, Any]] = body["calls"]
    return calls


async def test_calls_ring_answer_signal_and_end_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    alice = await cluster.connect(a, "alice")
    bob_a = await cluster.connect(a, "bob")
    bob_b = await cluster.connect(b, "bob")
    carol = await cluster.connect(b, "carol")
    everyone = (alice, bob_a, bob_b, carol)
    for client in everyone:
        await client.join(ROOM)
    await drain(*everyone)

    # alice (node A) calls bob, who has a connection on each node: both ring.
    call_id = await ring(alice, bob_a, bob_b)
    # ICE from the caller while ringing goes to every ringing connection, on both nodes.
    expected = await signal_to(alice, "ice_candidate", call_id, "bob", candidate(50001))
    for conn in (bob_a, bob_b):
        assert (await conn.recv("webrtc"))["payload"] == expected
    # bob answers on node B: the caller (node A) gets it, bob's tab on node A stops ringing.
    await answer(bob_b, alice, call_id)
    assert (await bob_a.recv("call_ended"))["payload"] == {
        "call_id": call_id,
        "reason": "answered_elsewhere",
    }
    # Signaling flows between the two call connections, across the nodes.
    expected = await signal_to(alice, "ice_candidate", call_id, "bob", candidate(50002))
    assert (await bob_b.recv("webrtc"))["payload"] == expected
    expected = await signal_to(bob_b, "ice_candidate", call_id, "alice", candidate(50003))
    assert (await alice.recv("webrtc"))["payload"] == expected
    # The tab that did not answer is out of the call, on its own node too.
    await signal_to(bob_a, "ice_candidate", call_id, "alice", candidate(50004))
    await bob_a.expect_error("forbidden", "webrtc")

    # Busy everywhere: carol (node B) calls bob, then alice (both in the call).
    busy_bob = await offer_refused(carol, "bob", "busy")
    busy_alice = await offer_refused(carol, "alice", "busy")
    for client in everyone:
        await barrier(client)

    # alice hangs up on node A: bob's answering connection on node B is told.
    await alice.send("call_end", {"call_id": call_id})
    assert (await bob_b.recv("call_ended"))["payload"] == {
        "call_id": call_id,
        "reason": "ended",
        "by": "alice",
    }
    for client in everyone:
        await barrier(client)

    # Glare across nodes: carol (node B) rings alice (node A); alice calls carol back.
    carol_call = await ring(carol, alice)
    glare = await offer_refused(alice, "carol", "glare")
    assert glare != carol_call
    await barrier(carol)
    # The earlier call still rings: carol cancels it, and alice is told.
    await carol.send("call_end", {"call_id": carol_call})
    assert (await alice.recv("call_ended"))["payload"] == {
        "call_id": carol_call,
        "reason": "ended",
        "by": "carol",
    }
    for client in everyone:
        await barrier(client)

    # The caller (node B) disconnects while bob's two connections ring.
    dropped_call = await ring(carol, bob_a, bob_b)
    await carol.close()
    for conn in (bob_a, bob_b):
        frames = await conn.recv_many(3, timeout=5)
        assert [(f["type"], f["payload"]) for f in frames] == [
            ("call_ended", {"call_id": dropped_call, "reason": "disconnected"}),
            ("user_left", joined("carol")),
            ("presence", presence("carol", "offline")),
        ]
    await drain(alice)

    # Every node lists each call once, as it ended.
    expected_alice = {call_id, busy_alice, carol_call, glare}
    deadline = time.monotonic() + 5
    while True:
        lists = [await list_calls(node, "alice") for node in (a, b)]
        if all(
            {c["call_id"] for c in calls} == expected_alice and all(c["ended_at"] for c in calls)
            for calls in lists
        ):
            break
        assert time.monotonic() < deadline, lists
        await asyncio.sleep(0.05)
    assert lists[0] == lists[1]
    assert len(lists[0]) == len(expected_alice), lists[0]  # no call twice
    by_id = {c["call_id"]: c for c in lists[0]}
    assert by_id[call_id]["caller"] == "alice" and by_id[call_id]["callee"] == "bob"
    assert by_id[call_id]["end_reason"] == "ended"
    assert by_id[call_id]["answered_at"] is not None
    assert (by_id[busy_alice]["caller"], by_id[busy_alice]["end_reason"]) == ("carol", "busy")
    assert (by_id[carol_call]["caller"], by_id[carol_call]["end_reason"]) == ("carol", "ended")
    assert by_id[carol_call]["answered_at"] is None
    assert (by_id[glare]["caller"], by_id[glare]["end_reason"]) == ("alice", "glare")

    expected_bob = {call_id, busy_bob, dropped_call}
    deadline = time.monotonic() + 5
    while True:
        lists = [await list_calls(node, "bob") for node in (a, b)]
        if all(
            len(calls) == len(expected_bob)
            and {c["call_id"] for c in calls} == expected_bob
            and all(c["ended_at"] for c in calls)
            for calls in lists
        ):
            break
        assert time.monotonic() < deadline, lists
        await asyncio.sleep(0.05)
    assert lists[0] == lists[1]
    assert {c["call_id"]: c["end_reason"] for c in lists[0]}[dropped_call] == "disconnected"
