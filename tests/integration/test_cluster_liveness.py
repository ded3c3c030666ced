"""How soon a killed node is declared gone: ``--node-ttl`` plus at most one refresh period.

A node's liveness score is its last refresh plus ``node_ttl``; the others see
it missing at their first refresh (every ``node_ttl / 3``) after it expired,
and declare it gone then. (It used to be declared gone only after another
``node_ttl`` of absence: twice the documented time.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as redis

from tests.harness.backends import REDIS_URL
from tests.harness.calls import answer, ring
from tests.harness.cluster import (
    ROOM,
    Cluster,
    drain,
    health,
    joined,
    presence,
)

TTL = 3.0
#: The documented worst case: the score expires TTL after the last refresh,
#: and the other node looks again at most one refresh period later.
BOUND = TTL + TTL / 3
#: For the log round trip and a busy machine; still well under 2 x TTL (6 s),
#: which the node took before.
SLACK = 1.0


async def test_a_killed_node_is_declared_gone_within_node_ttl_plus_one_refresh(
    cluster: Cluster,
) -> None:
    a, b = await cluster.start(2, "--node-ttl", str(TTL), "--typing-timeout", "60")
    watcher = await cluster.connect(a, "watcher")
    leaver = await cluster.connect(b, "leaver")
    for client in (watcher, leaver):
        await client.join(ROOM)
    await drain(watcher, leaver)
    call_id = await ring(leaver, watcher)
    await answer(watcher, leaver, call_id)
    await drain(watcher)

    # Kill B just after it refreshed its liveness: the longest wait starts then.
    node_b = (await health(b.http))[1]["node"]
    nodes_key = f"{cluster.name}:nodes"
    liveness = redis.from_url(REDIS_URL)
    try:
        first: Any = await liveness.zscore(nodes_key, node_b)
        deadline = time.monotonic() + TTL
        while await liveness.zscore(nodes_key, node_b) == first:
            assert time.monotonic() < deadline, "node B did not refresh its liveness"
            await asyncio.sleep(0.01)
    finally:
        await liveness.aclose()
    assert b.proc is not None
    b.proc.kill()
    killed = time.monotonic()
    b.proc.wait()

    frames = [await watcher.next(timeout=2 * TTL + 2) for _ in range(3)]
    elapsed = time.monotonic() - killed
    assert [(f["type"], f["payload"]) for f in frames] == [
        ("call_ended", {"call_id": call_id, "reason": "disconnected"}),
        ("user_left", joined("leaver")),
        ("presence", presence("leaver", "offline")),
    ]
    # Not before its liveness expired, and within the documented bound.
    assert TTL - 0.5 < elapsed < BOUND + SLACK, elapsed
