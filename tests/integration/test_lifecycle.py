"""Restart persistence and graceful shutdown of a real server process."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from tests.harness.client import Client
from tests.harness.database import stored_ids
from tests.harness.http import http_json
from tests.harness.server import ServerProcess


async def test_history_survives_a_restart(tmp_db: Path) -> None:
    server = ServerProcess(tmp_db).start()
    try:
        alice = await Client.connect(server.ws_url, "alice")
        await alice.join(1)
        sent = [await alice.chat(1, f"before restart {i}") for i in range(3)]
        await alice.close()
    finally:
        assert server.stop() == 0
    server.start()
    try:
        status, page = await http_json("GET", f"{server.http}/api/rooms/1/messages")
        assert status == 200
        assert [m["content"] for m in page["messages"]] == [m["content"] for m in sent]
        assert [m["id"] for m in page["messages"]] == [m["id"] for m in sent]
        bob = await Client.connect(server.ws_url, "bob")
        await bob.join(1)
        after = await bob.chat(1, "after restart")
        assert after["id"] > sent[-1]["id"]
        await bob.close()
    finally:
        server.stop()


async def test_sigterm_closes_clients_with_1001_and_loses_no_acknowledged_message(
    tmp_db: Path,
) -> None:
    server = ServerProcess(tmp_db, "--rate-limits", "off").start()
    alice = await Client.connect(server.ws_url, "alice")
    await alice.join(1)
    for i in range(2000):  # a burst, not awaited one by one
        await alice.send("chat", {"room_id": 1, "content": f"m{i}"})
    first = await alice.recv("chat")
    server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    acknowledged = [first["payload"]["id"]]
    close_code = None
    while True:
        message = await asyncio.wait_for(alice.ws.receive(), 10)
        if message.type is aiohttp.WSMsgType.TEXT:
            frame = message.json()
            if frame["type"] == "chat":
                acknowledged.append(frame["payload"]["id"])
        else:
            # The close frame's own code: the server may drop the TCP connection
            # before this client's reply, which aiohttp then reports as 1006.
            assert message.type is aiohttp.WSMsgType.CLOSE, message
            close_code = message.data
            break
    await alice.close()
    assert server.proc.wait(15) == 0  # type: ignore[union-attr]
    assert close_code == 1001
    stored = stored_ids(server)
    assert set(acknowledged) <= stored
    assert acknowledged == sorted(acknowledged)
