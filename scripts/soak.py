"""Soak test: a few hundred clients chatting and reconnecting for minutes.

Starts its own ``roomcast serve`` on a free port with a fresh SQLite file
(or, with ``--nodes N``, a cluster of N nodes on the PostgreSQL and Redis of
this machine; each reconnect then goes to the next node), runs the clients
for ``--seconds``, and samples the servers' resident memory and open file
descriptors. It passes when, after the clients are gone, open descriptors are
back at their idle level and memory stopped growing (the second half of the
run grew less than ``--max-growth-mb``), and every client saw each message of
its room exactly once and in order, with none missing: from the first message
it saw to its last, it saw every message the database holds for its room.

    .venv/bin/python scripts/soak.py --clients 300 --seconds 300
    .venv/bin/python scripts/soak.py --clients 200 --seconds 120 --nodes 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import aiohttp
import asyncpg
import redis.asyncio as redis

POSTGRES_URL = os.environ.get("ROOMCAST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ROOMCAST_TEST_REDIS", "redis://127.0.0.1:6379/0")


class Server:
    """``roomcast serve`` on a free port, as a user runs it; its output goes to a log file.

    ``cluster`` names the PostgreSQL schema and Redis key prefix of the nodes of
    one cluster; without it the server keeps its messages in ``database``.
    """

    def __init__(self, database: Path, cluster: str | None) -> None:
        self.database = database
        self.cluster = cluster
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.log_path = database.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ws"

    async def start(self, timeout: float = 15.0) -> Server:
        backend = (
            ["--database", f"{POSTGRES_URL}?search_path={self.cluster}",
             "--broker", REDIS_URL, "--broker-prefix", self.cluster]
            if self.cluster
            else ["--database", f"sqlite:///{self.database}"]
        )  # fmt: skip
        command = [sys.executable, "-m", "roomcast", "serve", "--port", str(self.port), *backend]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while self.proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"http://127.0.0.1:{self.port}/health") as response:
                        if response.status == 200:
                            return self
                await asyncio.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def drop_cluster_state(name: str) -> None:
    """Remove the cluster's PostgreSQL schema and Redis keys."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await conn.close()
    broker = redis.from_url(REDIS_URL)
    try:
        await broker.delete(f"{name}:log", f"{name}:nodes")
    finally:
        await broker.aclose()


async def stored_messages(server: Server) -> list[tuple[int, int]]:
    """``(id, room_id)`` of every message the server stored, by id."""
    if server.cluster is None:
        with contextlib.closing(sqlite3.connect(server.database)) as db:
            rows = db.execute("SELECT id, room_id FROM messages ORDER BY id").fetchall()
        return [(row[0], row[1]) for row in rows]
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        query = f"SELECT id, room_id FROM {server.cluster}.messages ORDER BY id"
        return [(row["id"], row["room_id"]) for row in await conn.fetch(query)]
    finally:
        await conn.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Stats:
    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.reconnects = 0
        self.errors: list[str] = []
        # (client, room) -> ids seen, for exactly-once and order checks
        self.seen: dict[tuple[int, int], list[int]] = defaultdict(list)


async def client(number: int, urls: list[str], rooms: int, deadline: float, stats: Stats) -> None:
    room = number % rooms + 1
    user = f"soak-{number}"
    last_id: int | None = None
    visits = number  # which node the next connection goes to
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            url = urls[visits % len(urls)]
            visits += 1
            try:
                async with session.ws_connect(f"{url}?user_id={user}") as ws:
                    join: dict[str, int] = {"room_id": room}
                    if last_id is not None:
                        join["since"] = last_id
                    await ws.send_str(json.dumps({"type": "join_room", "payload": join}))
                    stay = time.monotonic() + random.uniform(5, 30)
                    next_send = time.monotonic() + random.uniform(0, 1)
                    while time.monotonic() < min(stay, deadline):
                        timeout = max(0.01, next_send - time.monotonic())
                        try:
                            message = await ws.receive(timeout=timeout)
                        except TimeoutError:
                            content = f"{user} {stats.sent}"
                            await ws.send_str(
                                json.dumps(
                                    {
                                        "type": "chat",
                                        "payload": {"room_id": room, "content": content},
                                    }
                                )
                            )
                            stats.sent += 1
                            next_send = time.monotonic() + random.uniform(0.5, 1.5)
                            continue
                        if message.type is not aiohttp.WSMsgType.TEXT:
                            break
                        frame = json.loads(message.data)
                        if frame["type"] == "chat":
                            stats.received += 1
                            last_id = frame["payload"]["id"]
                            stats.seen[(number, room)].append(last_id)
                        elif frame["type"] == "error":
                            error = frame["payload"]
                            what = f"{error['code']} ({error.get('type')})"
                            if error["code"] != "rate_limited":
                                what += f": {error['message'][:60]}"
                            stats.errors.append(
                                what if error["code"] != "rate_limited" else "rate_limited"
                            )
                stats.reconnects += 1
            except (aiohttp.ClientError, OSError) as exc:
                stats.errors.append(repr(exc))
                await asyncio.sleep(0.5)


async def soak(clients: int, seconds: float, rooms: int, max_growth_mb: float, nodes: int) -> int:
    cluster = f"t_soak_{os.getpid()}" if nodes > 1 else None
    if cluster:
        await drop_cluster_state(cluster)
    with tempfile.TemporaryDirectory() as folder:
        servers = [
            await Server(Path(folder) / f"soak{i}.db", cluster).start() for i in range(nodes)
        ]
        pids = [server.proc.pid for server in servers if server.proc is not None]
        idle_fds = sum(open_fds(pid) for pid in pids)
        # Per sample: seconds, the largest node's RSS, open descriptors of all nodes.
        samples: list[tuple[float, float, int]] = []
        stats = Stats()
        deadline = time.monotonic() + seconds
        urls = [server.ws_url for server in servers]
        tasks = [
            asyncio.create_task(client(i, urls, rooms, deadline, stats)) for i in range(clients)
        ]
        started = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
            rss = max(rss_mb(pid) for pid in pids)
            samples.append((time.monotonic() - started, rss, sum(open_fds(p) for p in pids)))
            print(
                f"t={samples[-1][0]:6.1f}s rss={samples[-1][1]:7.1f} MB fds={samples[-1][2]:5d} "
                f"sent={stats.sent} received={stats.received} reconnects={stats.reconnects}",
                flush=True,
            )
        await asyncio.gather(*tasks)
        await asyncio.sleep(2)  # let the servers notice every close
        final_fds = sum(open_fds(pid) for pid in pids)
        final_rss = max(rss_mb(pid) for pid in pids)
        stored = await stored_messages(servers[0])
        for server in servers:
            server.stop()
    if cluster:
        await drop_cluster_state(cluster)

    half = [rss for t, rss, _ in samples if t >= seconds / 2]
    growth = (max(half) - min(half)) if half else 0.0
    duplicates = sum(len(ids) - len(set(ids)) for ids in stats.seen.values())
    disordered = sum(1 for ids in stats.seen.values() if ids != sorted(ids))
    missing = count_missing(stats.seen, stored)
    unexpected = [e for e in stats.errors if not e.startswith("rate_limited")]
    limited = Counter(e for e in stats.errors if e.startswith("rate_limited"))
    print(f"rate limited: {dict(limited)}")
    print(
        f"\nclients={clients} seconds={seconds:.0f} sent={stats.sent} received={stats.received} "
        f"reconnects={stats.reconnects}\n"
        f"fds idle={idle_fds} end={final_fds}; rss end={final_rss:.1f} MB, "
        f"growth over the second half={growth:.1f} MB\n"
        f"duplicates={duplicates} out_of_order={disordered} missing={missing} "
        f"errors={len(unexpected)}"
    )
    if unexpected:
        print(
            "errors by kind: "
            + ", ".join(f"{n} x {e}" for e, n in Counter(unexpected).most_common(5))
        )
    ok = (
        # Each cluster node may also have opened its database pool (10) and
        # Redis connections (2) since it was idle.
        final_fds <= idle_fds + nodes * (2 + (12 if cluster else 0))
        and growth <= max_growth_mb
        and duplicates == 0
        and disordered == 0
        and missing == 0
        and not unexpected
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def count_missing(seen: dict[tuple[int, int], list[int]], stored: list[tuple[int, int]]) -> int:
    """Stored messages a client should have seen (its room, between its first and
    last message) but did not."""
    by_room: dict[int, list[int]] = defaultdict(list)
    for message_id, room_id in stored:
        by_room[room_id].append(message_id)
    missing = 0
    for (_, room), ids in seen.items():
        if ids:
            expected = [i for i in by_room[room] if ids[0] <= i <= ids[-1]]
            missing += len(set(expected) - set(ids))
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rooms", type=int, default=30)
    parser.add_argument("--max-growth-mb", type=float, default=20.0)
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="cluster nodes on PostgreSQL + Redis (default: 1, SQLite)",
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(
            soak(args.clients, args.seconds, args.rooms, args.max_growth_mb, args.nodes)
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
