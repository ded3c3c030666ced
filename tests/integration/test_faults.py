"""Faults: the database goes away mid-traffic, a client floods, a client never reads."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.harness.client import Client
from tests.harness.database import database_locked
from tests.harness.http import http_json
from tests.harness.server import ServerProcess


async def test_locked_database_fails_senders_broadcasts_nothing_and_recovers(
    tmp_db: Path,
) -> None:
    server = ServerProcess(tmp_db, "--db-timeout", "0.2").start()
    try:
        alice = await Client.connect(server.ws_url, "alice")
        bob = await Client.connect(server.ws_url, "bob")
        await alice.join(1)
        await bob.join(1)
        await alice.recv("user_joined")
        before = await alice.chat(1, "before the outage")
        await bob.recv("chat")

        # Another process takes the database's write lock and keeps it.
        async with database_locked(server):
            for i in range(3):
                await alice.send("chat", {"room_id": 1, "content": f"during {i}"})
            for _ in range(3):
                error = await alice.expect_error("internal", "chat")
                assert "stored" in error["message"]
            await bob.sync()  # bob received no chat while nothing could be stored
            await alice.sync()

        after = await alice.chat(1, "after the outage")
        assert (await bob.recv("chat"))["payload"] == after
        status, page = await http_json("GET", f"{server.http}/api/rooms/1/messages")
        assert status == 200
        assert [m["content"] for m in page["messages"]] == ["before the outage", "after the outage"]
        assert after["id"] > before["id"]
        await alice.close()
        await bob.close()
    finally:
        assert server.stop() == 0


async def test_flooder_does_not_slow_the_room_for_others(tmp_db: Path) -> None:
    server = ServerProcess(tmp_db).start()  # default rate limits
    try:
        flooder = await Client.connect(server.ws_url, "flooder")
        alice = await Client.connect(server.ws_url, "alice")
        bob = await Client.connect(server.ws_url, "bob")
        for client in (flooder, alice, bob):
            await client.join(1)
        for i in range(2000):
            try:
                await flooder.send("chat", {"room_id": 1, "content": f"spam {i}"})
            except aiohttp.ClientConnectionResetError:
                break  # already cut off
        # A person chatting meanwhile gets every message through, in order.
        sent = []
        for i in range(10):
            await alice.send("chat", {"room_id": 1, "content": f"hello {i}"})
            while True:
                frame = await alice.recv_until("chat", timeout=10)
                if frame["payload"]["content"] == f"hello {i}":
                    sent.append(frame["payload"]["id"])
                    break
        received: list[int] = []
        while len(received) < 10:
            frame = await bob.recv_until("chat", timeout=10)
            if frame["payload"]["user_id"] == "alice":
                received.append(frame["payload"]["id"])
        assert received == sent
        # The flooder was cut off (1008) after its limit; at most its burst got through.
        _, page = await http_json("GET", f"{server.http}/api/rooms/1/messages?limit=100")
        spam = [m for m in page["messages"] if m["user_id"] == "flooder"]
        assert 0 < len(spam) <= 40
        assert "flood" in server.log()
        for client in (flooder, alice, bob):
            await client.close()
    finally:
        server.stop()
