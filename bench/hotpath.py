"""roomcast's own per-message cost, without sockets.

Feeds chat frames from 32 members of one room straight into the node
(real SQLite store, group commit, engine, encoding and corked fan-out into
transports that only count bytes) and prints CPU microseconds per message.
What the full benchmark measures on top of this is the WebSocket library and
the kernel.

    .venv/bin/python bench/hotpath.py [rounds] [--profile]
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import tempfile
import time

import msgspec
import uvloop

from roomcast.adapters.local_broker import LocalBroker
from roomcast.adapters.sqlite_store import SQLiteStore
from roomcast.clock import wall_ms
from roomcast.config import Settings
from roomcast.features import default_features
from roomcast.node.node import Node
from roomcast.transport.fanout import FanOut

MEMBERS = 32


class CountingTransport:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        pass


async def no_close(code: int, reason: str) -> None:
    pass


async def run(rounds: int, profile: bool) -> None:
    folder = tempfile.mkdtemp()
    settings = Settings(database=f"sqlite:///{folder}/hotpath.db", rate_limits="off")
    store = SQLiteStore(
        settings.database,
        wall_ms,
        settings.commit_max_batch,
        None,
        settings.db_timeout,
        settings.commit_linger_ms / 1000,
    )
    await store.start()
    node = Node(store, LocalBroker(), FanOut(settings.max_send_buffer), settings, default_features)
    conns = [node.open("bench", no_close, CountingTransport(), f"user{i}") for i in range(MEMBERS)]
    join = msgspec.json.encode({"type": "join_room", "payload": {"room_id": 1}})
    for conn in conns:
        await node.receive(conn, join)
    frames = [
        msgspec.json.encode(
            {"type": "chat", "payload": {"room_id": 1, "content": f"hello from {i}"}}
        )
        for i in range(MEMBERS)
    ]
    await asyncio.sleep(0.1)
    profiler = cProfile.Profile() if profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    for _ in range(rounds):
        for conn, frame in zip(conns, frames, strict=True):
            await node.receive(conn, frame)
        await asyncio.sleep(0)
    while store._committer.pending():
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    messages = rounds * MEMBERS
    print(
        f"{messages} messages to {MEMBERS} members: {wall:.2f} s wall, "
        f"{cpu / messages * 1e6:.1f} µs CPU per message, "
        f"{cpu / (messages * MEMBERS) * 1e6:.2f} s CPU per million deliveries"
    )
    await store.close()
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    uvloop.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, "--profile" in sys.argv))
