"""``GET /metrics`` speaks the Prometheus text format and counts what happened."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.client import Client, Connect
from tests.harness.server import ServerProcess


async def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"{server.http}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_traffic_errors_and_live_state(
    server: ServerProcess, connect: Connect, room_id: int, user
) -> None:
    before = await scrape(server)
    alice: Client = await connect(user("alice"))
    bob: Client = await connect(user("bob"))
    await alice.join(room_id)
    await bob.join(room_id)
    await alice.chat(room_id, "counted")
    await bob.recv_until("chat")
    await bob.send("teleport", {})
    await bob.expect_error("unknown_type")
    after = await scrape(server)

    def grew(name: str, by: float, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        assert after.get(key, 0) - before.get(key, 0) >= by, (key, before.get(key), after.get(key))

    grew("roomcast_messages_received_total", 1, type="chat")
    grew("roomcast_messages_received_total", 2, type="join_room")
    grew("roomcast_messages_sent_total", 2, type="chat")  # two members
    grew("roomcast_errors_total", 1, code="unknown_type")
    grew("roomcast_db_commit_seconds_count", 1)
    grew("roomcast_db_commit_batch_size_count", 1)
    grew("roomcast_broadcast_fanout_count", 1)
    assert after[("roomcast_connections", ())] >= 2
    assert after[("roomcast_users", ())] >= 2
    assert after[("roomcast_rooms", ())] >= 1
    assert ("roomcast_slow_consumer_disconnects_total", ()) in after
