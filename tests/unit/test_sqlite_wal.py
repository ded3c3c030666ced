"""The SQLite store keeps its write-ahead log bounded, and a reader that pins an old
snapshot delays the truncation without failing writes or stopping it for good."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from roomcast.adapters.sqlite_store import SQLiteStore
from roomcast.ports.store import InsertMessage, Outcome

BOUND = 4 * 1024 * 1024
CONTENT = "y" * 2000


def wal_size(store: SQLiteStore) -> int:
    try:
        return os.stat(store.path + "-wal").st_size
    except FileNotFoundError:
        return 0


async def write(store: SQLiteStore, count: int) -> int:
    """``count`` messages in batches of 20; the largest WAL size seen after a batch."""
    peak = 0
    for start in range(0, count, 20):
        futures = [
            store.run(InsertMessage(1, "al", CONTENT, "text", 1)) for _ in range(start, start + 20)
        ]
        for result in await asyncio.gather(*futures):
            assert result.outcome is Outcome.DONE
        peak = max(peak, wal_size(store))
    return peak


async def eventually_below(store: SQLiteStore, size: int, rounds: int = 500) -> None:
    for _ in range(rounds):
        if wal_size(store) < size:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the WAL stayed at {wal_size(store)} bytes")


async def test_sustained_writes_keep_the_wal_near_its_bound(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'w.db'}", lambda: 0, max_wal_bytes=BOUND)
    await store.start()
    try:
        await store.ensure_room(1, "al", 0)
        # About 20 MB of messages, five times the bound. Past half the bound
        # the log is truncated; the margin is for what is written meanwhile.
        peak = await write(store, 10_000)
        assert peak < 2 * BOUND, peak
    finally:
        await store.close()
    assert wal_size(store) == 0  # the last checkpoint on close empties it


async def test_a_pinned_snapshot_delays_truncation_until_it_is_released(tmp_path: Path) -> None:
    store = SQLiteStore(
        f"sqlite:///{tmp_path / 'p.db'}", lambda: 0, timeout=5.0, max_wal_bytes=BOUND
    )
    await store.start()
    reader = sqlite3.connect(store.path, isolation_level=None)
    try:
        await store.ensure_room(1, "al", 0)
        await write(store, 100)
        # Another process reads inside a transaction and keeps it open: the log
        # cannot start over while that snapshot needs it.
        reader.execute("BEGIN")
        pinned = reader.execute("SELECT count(*) FROM messages").fetchone()[0]
        # Every write still succeeds (write() checks each result) while the
        # checkpointer keeps trying.
        peak = await write(store, 5000)
        assert peak > 2 * BOUND
        assert reader.execute("SELECT count(*) FROM messages").fetchone()[0] == pinned
        reader.execute("COMMIT")
        # Released: a retry truncates the log, without any further write.
        await eventually_below(store, BOUND)
        assert await write(store, 5000) < 2 * BOUND
    finally:
        reader.close()
        await store.close()
