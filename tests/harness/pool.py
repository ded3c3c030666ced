"""Servers and clients of one test, all of them stopped and closed when it ends.

The shared ``server`` fixture runs without rate limits; tests that need them (or other
limits) start their own servers. Every test proves what did *not* happen as well: a
refused message is neither stored (HTTP history) nor broadcast (a later frame arrives
first, or a ping round trip shows nothing else is queued).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from tests.harness.client import Client
from tests.harness.raw_websocket import RawWebSocket
from tests.harness.server import ServerProcess


class Pool:
    """Servers and clients of one test; all of them are stopped and closed afterwards."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers: list[ServerProcess] = []
        self.clients: list[Client] = []
        self.raw_sockets: list[RawWebSocket] = []

    def server(self, *flags: str) -> ServerProcess:
        server = ServerProcess(self.directory / f"roomcast-{len(self.servers)}.db", *flags)
        self.servers.append(server)
        return server.start()

    async def client(self, server: ServerProcess, user_id: str, **kwargs: Any) -> Client:
        client = await Client.connect(server.ws_url, user_id, **kwargs)
        self.clients.append(client)
        return client

    async def raw(
        self, server: ServerProcess, user_id: str, rcvbuf: int | None = None
    ) -> RawWebSocket:
        raw = await RawWebSocket.connect(server.port, f"user_id={user_id}", rcvbuf=rcvbuf)
        self.raw_sockets.append(raw)
        return raw

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):  # already cut by the server
                await client.close()
        for raw in self.raw_sockets:
            raw.close()
        for server in self.servers:
            if server.proc is not None:
                server.stop()


async def members(pool: Pool, server: ServerProcess, room_id: int, *names: str) -> list[Client]:
    """Clients of ``names``, all in ``room_id``, with every join announcement consumed."""
    clients: list[Client] = []
    for name in names:
        client = await pool.client(server, name)
        await client.join(room_id)
        for earlier in clients:
            joined = await earlier.recv("user_joined")
            assert joined["payload"] == {"room_id": room_id, "user_id": name}
        clients.append(client)
    return clients
