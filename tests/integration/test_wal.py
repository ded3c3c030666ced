"""The SQLite write-ahead log stays under ``--max-wal-bytes`` while writes keep coming."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.harness.backends import CLUSTER
from tests.harness.client import Client
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

pytestmark = pytest.mark.skipif(CLUSTER, reason="the write-ahead log is SQLite's")

MIB = 1024 * 1024


class PeakSize:
    """The largest size a file had, sampled from another thread while a block runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.peak = 0

    def sample(self) -> int:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = 0
        self.peak = max(self.peak, size)
        return size

    @contextmanager
    def watching(self) -> Iterator[PeakSize]:
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(0.002):
                self.sample()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.sample()


async def send_window(client: Client, room_id: int, count: int, content: str) -> list[int]:
    """Send ``count`` chats, keeping up to 64 unacknowledged; the ids of the echoes."""
    ids: list[int] = []
    sent = 0
    while len(ids) < count:
        while sent < count and sent - len(ids) < 64:
            await client.send("chat", {"room_id": room_id, "content": content})
            sent += 1
        frame = await client.recv("chat", timeout=30)
        ids.append(frame["payload"]["id"])
    return ids


async def test_sustained_chat_keeps_the_wal_under_its_bound(tmp_db: Path) -> None:
    bound = 4 * MIB
    # Set through the environment, as a deployment may: a server that does not
    # know the setting still runs, and its WAL is measured the same way.
    server = ServerProcess(
        tmp_db, "--rate-limits", "off", env={"ROOMCAST_MAX_WAL_BYTES": str(bound)}
    ).start()
    senders: list[Client] = []
    try:
        for i in range(2):
            senders.append(await Client.connect(server.ws_url, f"writer{i}"))
            await senders[i].join(10 + i)
        content = "x" * 4000  # the longest chat message: 10,000 of them are 40 MB of text
        wal = PeakSize(Path(f"{tmp_db}-wal"))
        with wal.watching():
            for _ in range(5):
                for i, client in enumerate(senders):
                    ids = await send_window(client, 10 + i, 1000, content)
                    assert ids == sorted(ids) and len(set(ids)) == 1000
        # Past half the bound a checkpoint empties the log; the other half, and
        # this margin, are for what is written while it runs.
        assert wal.peak < 2 * bound, f"the WAL reached {wal.peak / MIB:.1f} MiB"
        status, page = await http_json("GET", f"{server.http}/api/rooms/11/messages?limit=1")
        assert status == 200 and page["messages"][0]["content"] == content
    finally:
        for client in senders:
            await client.close()
        assert server.stop() == 0
