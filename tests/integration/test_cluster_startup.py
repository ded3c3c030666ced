"""A starting node is not ready until the live nodes sent their snapshots, then knows them."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import aiohttp

from tests.harness.calls import OFFER, answer, offer_refused, ring
from tests.harness.cluster import (
    BASE_ARGS,
    ROOM,
    Cluster,
    drain,
    health,
    http_users,
    room_users,
)
from tests.harness.server import ServerProcess


async def test_a_new_node_is_not_ready_until_the_live_nodes_told_it_what_they_hold(
    cluster: Cluster,
) -> None:
    """A node that starts asks every live node for a snapshot; until it has them (or
    node_ttl passed) /health says "starting" with 503, so no traffic reaches a replica
    that would think a callee on another node is unavailable."""
    [a] = await cluster.start(1)
    alice = await cluster.connect(a, "alice")
    await alice.join(ROOM)
    a.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]  # alive, but silent
    try:
        b = ServerProcess(cluster.directory / "late.db", *BASE_ARGS, cluster=cluster.name)
        cluster.nodes.append(b)
        starting = asyncio.create_task(asyncio.to_thread(b.start))
        seen: set[str] = set()
        while not starting.done():
            with contextlib.suppress(OSError, aiohttp.ClientError, ValueError):
                status, body = await health(b.http)
                seen.add(f"{status} {body.get('status')}")
            await asyncio.sleep(0.05)
        await starting
        assert "503 starting" in seen, seen
    finally:
        a.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    # Woken up, node A answers B's snapshot request: B learns that alice is there.
    deadline = time.monotonic() + 5
    while (await http_users(b))[1] != room_users(ROOM, "alice"):
        assert time.monotonic() < deadline, await http_users(b)
        await asyncio.sleep(0.05)


async def test_a_node_started_during_a_call_learns_it_from_the_snapshots(
    cluster: Cluster,
) -> None:
    """A call placed before a node existed is in that node's replica (from the caller's
    node's snapshot): callers there see the parties busy, and the call still ends
    normally for everyone."""
    [a] = await cluster.start(1)
    alice = await cluster.connect(a, "alice")
    bob = await cluster.connect(a, "bob")
    for client in (alice, bob):
        await client.join(ROOM)
    await drain(alice, bob)
    call_id = await ring(alice, bob)
    await answer(bob, alice, call_id)

    [b] = await cluster.start(1)
    carol = await cluster.connect(b, "carol")
    await carol.join(ROOM)
    await offer_refused(carol, "alice", "busy")
    await offer_refused(carol, "bob", "busy")
    await alice.send("call_end", {"call_id": call_id})
    assert (await bob.recv_until("call_ended"))["payload"] == {
        "call_id": call_id,
        "reason": "ended",
        "by": "alice",
    }
    # The call is over on node B too: carol can now ring bob.
    await carol.send("webrtc", {"type": "offer", "to_user_id": "bob", "data": OFFER})
    assert (await carol.recv_until("call_ringing"))["payload"]["to_user_id"] == "bob"
