"""``--workers``: several processes of one node share its port and chat through the cluster."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness.backends import cluster_args, drop_cluster_state
from tests.harness.calls import uid
from tests.harness.client import Client
from tests.harness.cluster import (
    BASE_ARGS,
    ROOM,
    barrier,
    cluster_name,
    drain,
    health,
    send_chat,
)
from tests.harness.server import free_port


class WorkersProcess:
    """``roomcast serve --workers N``: one parent, N nodes sharing one port."""

    def __init__(self, directory: Path, name: str, count: int) -> None:
        self.port = free_port()
        self.log_path = directory / f"workers.{self.port}.log"
        self.command = [
            sys.executable, "-m", "roomcast", "serve",
            "--workers", str(count),
            "--port", str(self.port),
            *cluster_args(name),
            *BASE_ARGS,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.command, stdout=log, stderr=log, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.http}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"did not become healthy:\n{self.log()}")

    def stop(self) -> None:
        """Make sure the parent and its workers are gone (their own process group)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def connections_per_worker(url: str, attempts: int = 60) -> dict[str, int]:
    """Each worker's open WebSocket connections, asking both over one HTTP connection."""
    counts: dict[str, int] = {}
    for _ in range(attempts):
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(f"{url}/health") as response:
                first = (await response.json())["node"]
            async with session.get(f"{url}/metrics") as response:
                text = await response.text()
            async with session.get(f"{url}/health") as response:
                second = (await response.json())["node"]
        if first != second:
            continue  # not one connection after all: cannot tell whose metrics these are
        [line] = [line for line in text.splitlines() if line.startswith("roomcast_connections ")]
        counts[first] = int(float(line.split()[1]))
        if len(counts) == 2:
            break
    return counts


async def expect_close_after_departures(client: Client, code: int, timeout: float = 10) -> None:
    """The server closes ``client`` with ``code``; before that only other users leaving
    (whose connections on the other worker closed first) may arrive."""
    deadline = time.monotonic() + timeout
    while True:
        message = await asyncio.wait_for(
            client.ws.receive(), max(0.01, deadline - time.monotonic())
        )
        if message.type is not aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(message.data)
        assert frame["type"] in ("user_left", "presence"), frame
        if frame["type"] == "presence":
            assert frame["payload"]["status"] == "offline", frame
    closing = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
    assert message.type in closing, f"expected a close, got {message.type!r} {message.data!r}"
    received = message.data if message.type is aiohttp.WSMsgType.CLOSE else client.ws.close_code
    assert received == code, (received, message)


@pytest.fixture
def workers_cluster(tmp_path: Path) -> Iterator[WorkersProcess]:
    name = cluster_name()
    drop_cluster_state(name)
    process = WorkersProcess(tmp_path, name, 2)
    try:
        yield process
    finally:
        process.stop()
        print(f"----- workers :{process.port} -----")
        print(process.log()[-20000:])
        drop_cluster_state(name)


async def test_workers_share_one_port_and_chat_between_them(
    workers_cluster: WorkersProcess,
) -> None:
    server = workers_cluster
    await asyncio.to_thread(server.start)
    # The kernel spreads new connections over both processes: two nodes answer.
    nodes: set[str] = set()
    deadline = time.monotonic() + 15
    while len(nodes) < 2:
        assert time.monotonic() < deadline, nodes
        status, body = await health(server.http)
        if status == 200:
            assert body["status"] == "ok" and body["broker"] == "connected", body
            nodes.add(body["node"])
    await asyncio.sleep(0.3)  # the second worker's snapshot exchange

    clients: list[Client] = []
    try:
        # Connect until both workers hold connections (almost always after a few).
        while True:
            for _ in range(4):
                clients.append(await Client.connect(f"{server.http}/ws", f"u{len(clients)}"))
            counts = await connections_per_worker(server.http)
            if len(counts) == 2 and all(counts.values()):
                break
            assert len(clients) < 24, counts
        assert set(counts) == nodes
        assert sum(counts.values()) == len(clients), counts

        for client in clients:
            await client.join(ROOM)
        await drain(*clients)
        for client in clients:
            await send_chat(client, f"from {uid(client)}")
        seen: list[list[dict[str, Any]]] = []
        for client in clients:
            seen.append([(await client.recv("chat", timeout=5))["payload"] for _ in clients])
        reference = seen[0]
        ids = [m["id"] for m in reference]
        assert all(x < y for x, y in itertools.pairwise(ids)), ids
        assert sorted(m["content"] for m in reference) == sorted(f"from {uid(c)}" for c in clients)
        assert all(client_seen == reference for client_seen in seen)
        for client in clients:
            await barrier(client)

        # SIGTERM to the parent: every worker drains its connections, the parent exits 0.
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        for client in clients:
            await expect_close_after_departures(client, 1001)
        code = await asyncio.to_thread(server.proc.wait, 15)
        assert code == 0, server.log()
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2)
