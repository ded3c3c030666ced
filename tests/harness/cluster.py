"""Several roomcast processes as one cluster: real Redis, real PostgreSQL, real sockets.

Every test gets a cluster of its own (a PostgreSQL schema and a Redis key
prefix named ``t_<uuid>``) and starts two or three ``roomcast serve`` nodes in
it, with clients spread over the nodes.

Frames caused on one node reach another node's clients through the Redis log,
so a plain ``sync()`` (a ping round trip to the client's own node) proves
nothing about them. :func:`barrier` is the cross-node equivalent: a
``join_room`` of a room the connection is already in goes through the log and
comes back as ``room_users``, so when it returns, the client's node has
applied every log entry appended before it, and whatever those entries sent
to the client arrived before that ``room_users``.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness.backends import POSTGRES_URL
from tests.harness.client import Client, without_activity
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

NODE_TTL = 1.5
TYPING_TIMEOUT = 0.5
BASE_ARGS = (
    "--typing-timeout", str(TYPING_TIMEOUT),
    "--rate-limits", "off",
    "--node-ttl", str(NODE_TTL),
)  # fmt: skip
ROOM = 1
OTHER_ROOM = 2


class Cluster:
    """Nodes of one cluster and the clients connected to them; all stopped at the end."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.nodes: list[ServerProcess] = []
        self.clients: list[Client] = []

    async def start(self, count: int, *extra: str) -> list[ServerProcess]:
        """Start ``count`` nodes at once (``extra`` flags win over the defaults)."""
        first = len(self.nodes)
        nodes = [
            ServerProcess(
                self.directory / f"node{first + i}.db", *BASE_ARGS, *extra, cluster=self.name
            )
            for i in range(count)
        ]
        self.nodes.extend(nodes)
        # In threads: start() blocks, and a test may serve something on this loop.
        await asyncio.gather(*(asyncio.to_thread(node.start) for node in nodes))
        # Let the nodes' snapshot exchange (a node that starts asks everyone) pass.
        await asyncio.sleep(0.3)
        return nodes

    async def connect(self, node: ServerProcess, user_id: str) -> Client:
        client = await Client.connect(node.ws_url, user_id)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2)
        for node in self.nodes:
            if node.proc is not None:
                node.stop()

    def dump_logs(self) -> None:
        """Printed at teardown: pytest shows it only when the test failed."""
        for node in self.nodes:
            print(f"----- node :{node.port} ({node.log_path.name}) -----")
            print(node.log()[-20000:])


def cluster_name() -> str:
    return "t_" + uuid.uuid4().hex[:12]


def online(*user_ids: str, **statuses: str) -> list[dict[str, str]]:
    return [{"user_id": u, "status": statuses.get(u, "online")} for u in sorted(user_ids)]


def room_users(room_id: int, *user_ids: str, **statuses: str) -> dict[str, Any]:
    return {"room_id": room_id, "users": online(*user_ids, **statuses)}


def joined(user_id: str, room_id: int = ROOM) -> dict[str, Any]:
    return {"room_id": room_id, "user_id": user_id}


def typing(user_id: str, is_typing: bool, room_id: int = ROOM) -> dict[str, Any]:
    return {"room_id": room_id, "user_id": user_id, "is_typing": is_typing}


def presence(user_id: str, status: str) -> dict[str, str]:
    return {"user_id": user_id, "status": status}


async def barrier(client: Client, room_id: int = ROOM, expect_users: Any = None) -> None:
    """A round trip through the log from ``client``'s node; nothing may arrive before it."""
    payload = await client.join(room_id)
    assert payload["room_id"] == room_id
    if expect_users is not None:
        assert {**payload, "users": without_activity(payload["users"])} == expect_users


async def drain(*clients: Client, room_id: int = ROOM) -> None:
    """Drop what each client was sent up to a round trip through the log."""
    for client in clients:
        await client.send("join_room", {"room_id": room_id})
        await client.recv_until("room_users", timeout=5)


async def send_chat(client: Client, content: str, room_id: int = ROOM) -> None:
    await client.send("chat", {"room_id": room_id, "content": content, "type": "text"})


def db_ids(name: str, room_id: int = ROOM) -> list[int]:
    """The room's message ids in the cluster's database, read without any node."""
    result = subprocess.run(
        [
            "psql", POSTGRES_URL, "-At", "-c",
            f"SELECT id FROM {name}.messages WHERE room_id = {room_id} ORDER BY id",
        ],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return [int(line) for line in result.stdout.split()]


async def http_users(server: ServerProcess, room_id: int = ROOM) -> tuple[int, Any]:
    """``GET /api/rooms/{id}/users``, without the clock's ``last_active_at``."""
    status, body = await http_json("GET", f"{server.http}/api/rooms/{room_id}/users")
    if status == 200:
        body["users"] = without_activity(body["users"])
    return status, body


async def health(url: str) -> tuple[int, Any]:
    # A new connection each time (with --workers the kernel picks a process per connection).
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        return response.status, await response.json()


async def wait_health(url: str, broker: str, timeout: float = 8.0) -> dict[str, Any]:
    """Poll /health until it reports ``broker``; returns that body."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await health(url)
        if body.get("broker") == broker:
            return dict(body)
        assert time.monotonic() < deadline, (status, body)
        await asyncio.sleep(0.05)


async def frames_within(client: Client, count: int, deadline: float) -> list[dict[str, Any]]:
    """The next ``count`` frames, all of which must arrive before ``deadline`` (monotonic)."""
    frames: list[dict[str, Any]] = []
    for _ in range(count):
        frames.append(await client.next(timeout=max(0.01, deadline - time.monotonic())))
    return frames
