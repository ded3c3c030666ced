"""Reading and locking a server's database from outside the server, whichever it is."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import AsyncIterator

import asyncpg

from tests.harness.backends import POSTGRES_URL
from tests.harness.server import ServerProcess


def stored_ids(server: ServerProcess) -> set[int]:
    """Ids of every message in the server's database, whichever database it is."""
    return {message_id for message_id, _ in stored_messages(server)}


def stored_messages(server: ServerProcess) -> list[tuple[int, int]]:
    """``(id, room_id)`` of every message in the server's database, by id."""
    if server.cluster is None:
        with sqlite3.connect(server.database) as conn:
            query = "SELECT id, room_id FROM messages ORDER BY id"
            return [(row[0], row[1]) for row in conn.execute(query)]
    query = f"SELECT id, room_id FROM {server.cluster}.messages ORDER BY id"
    result = subprocess.run(
        ["psql", POSTGRES_URL, "-At", "-F", " ", "-c", query],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = (line.split() for line in result.stdout.splitlines() if line.strip())
    return [(int(message_id), int(room_id)) for message_id, room_id in rows]


@contextlib.asynccontextmanager
async def database_locked(server: ServerProcess, rooms: bool = False) -> AsyncIterator[None]:
    """Another process holds the write lock of the server's database until the block ends.

    On PostgreSQL that locks the messages table; ``rooms=True`` also locks the
    rooms table against reads, so that a ``join_room`` waits too.
    """
    if server.cluster is None:
        blocker = sqlite3.connect(server.database, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            blocker.rollback()
            blocker.close()
        return
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(f"LOCK TABLE {server.cluster}.messages IN EXCLUSIVE MODE")
        if rooms:
            await conn.execute(f"LOCK TABLE {server.cluster}.rooms IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await transaction.rollback()
    finally:
        await conn.close()
