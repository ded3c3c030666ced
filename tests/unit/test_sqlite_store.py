"""The SQLite store on a real file: group commit, rules inside the transaction, history."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roomcast.adapters import migrations
from roomcast.adapters.sqlite_store import SQLiteStore, sqlite_path
from roomcast.ports.store import (
    DeleteMessage,
    EditMessage,
    InsertMessage,
    Outcome,
    StoreUnavailable,
    ToggleReaction,
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'rc.db'}", lambda: 1000)
    await store.start()
    yield store
    await store.close()


def insert(room: int, user: str, text: str) -> InsertMessage:
    return InsertMessage(room_id=room, user_id=user, content=text, kind="text", created_at=1)


def test_url_forms() -> None:
    assert sqlite_path("sqlite:///rel.db") == "rel.db"
    assert sqlite_path("sqlite:////abs/x.db") == "/abs/x.db"
    assert sqlite_path("plain.db") == "plain.db"
    with pytest.raises(ValueError):
        sqlite_path("sqlite:///:memory:")


async def test_concurrent_submissions_share_transactions_and_keep_order(
    store: SQLiteStore,
) -> None:
    await store.ensure_room(1, "al", 0)
    futures = [store.run(insert(1, "al", f"m{i}")) for i in range(500)]
    results = await asyncio.gather(*futures)
    ids = [r.message_id for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 500
    history = await store.history(1, None, 100)
    assert [m.content for m in history] == [f"m{i}" for i in range(400, 500)]


async def test_edit_delete_and_reactions_follow_the_rules(store: SQLiteStore) -> None:
    await store.ensure_room(1, "al", 0)
    mine = (await store.run(insert(1, "al", "hello"))).message_id
    rooms = frozenset({1})

    other_edit = await store.run(EditMessage(mine, "bo", rooms, "hacked", 2))
    assert other_edit.outcome is Outcome.FORBIDDEN
    outside = await store.run(EditMessage(mine, "al", frozenset({2}), "x", 2))
    assert outside.outcome is Outcome.NOT_FOUND  # not in the room: not revealed
    edit = await store.run(EditMessage(mine, "al", rooms, "hello!", 3))
    assert (edit.outcome, edit.room_id) == (Outcome.DONE, 1)

    added = await store.run(ToggleReaction(mine, "bo", rooms, "👍", 4))
    assert added.added is True
    [item] = await store.history(1, None, 10)
    assert (item.content, item.edited_at, item.reactions) == ("hello!", 3, {"👍": ["bo"]})
    removed = await store.run(ToggleReaction(mine, "bo", rooms, "👍", 5))
    assert (removed.outcome, removed.added) == (Outcome.DONE, False)

    assert (await store.run(DeleteMessage(mine, "bo", rooms, 6))).outcome is Outcome.FORBIDDEN
    assert (await store.run(DeleteMessage(mine, "al", rooms, 6))).outcome is Outcome.DONE
    assert await store.history(1, None, 10) == []
    gone = await store.run(EditMessage(mine, "al", rooms, "back", 7))
    assert gone.outcome is Outcome.NOT_FOUND
    raw = sqlite3.connect(store.path).execute("SELECT content FROM messages WHERE id = ?", (mine,))
    assert raw.fetchone() == (None,)  # the content is gone from storage


async def test_history_pages_walk_back_to_the_start(store: SQLiteStore) -> None:
    await store.ensure_room(3, "al", 0)
    for i in range(7):
        await store.run(insert(3, "al", str(i)))
    page1 = await store.history(3, None, 3)
    page2 = await store.history(3, page1[0].id, 3)
    page3 = await store.history(3, page2[0].id, 3)
    assert [m.content for m in page3 + page2 + page1] == [str(i) for i in range(7)]


async def test_private_rooms_and_listing(store: SQLiteStore) -> None:
    public = await store.create_room("lobby", False, (), "al", 0)
    secret = await store.create_room("secret", True, ("al", "bo"), "al", 0)
    assert secret.admits("bo") and not secret.admits("cy") and public.admits(None)
    assert [r.name for r in await store.list_rooms("cy")] == ["lobby"]
    assert [r.name for r in await store.list_rooms("bo")] == ["lobby", "secret"]
    assert (await store.ensure_room(secret.id, "cy", 0)).private  # never overwritten


async def test_locked_database_fails_every_op_in_the_batch_then_recovers(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'locked.db'}", lambda: 0, timeout=0.2)
    await store.start()
    await store.ensure_room(1, "al", 0)
    blocker = sqlite3.connect(store.path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    # The event loop stays free while the writer waits for the lock.
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    futures = [store.run(insert(1, "al", "lost?")) for _ in range(3)]
    for outcome in await asyncio.gather(*futures, return_exceptions=True):
        assert isinstance(outcome, StoreUnavailable)
    ticker.cancel()
    assert ticks >= 5
    blocker.rollback()
    blocker.close()
    assert (await store.run(insert(1, "al", "kept"))).outcome is Outcome.DONE
    assert [m.content for m in await store.history(1, None, 10)] == ["kept"]
    await store.close()


async def test_close_commits_everything_submitted(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "c.db"), lambda: 0)
    await store.start()
    await store.ensure_room(1, "al", 0)
    futures = [store.run(insert(1, "al", str(i))) for i in range(50)]
    await store.close()
    assert all(f.done() and not f.exception() for f in futures)
    count = sqlite3.connect(tmp_path / "c.db").execute("SELECT count(*) FROM messages")
    assert count.fetchone() == (50,)


def test_migrations_apply_once(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    assert migrations.apply_sqlite(conn, 0) == [m.version for m in migrations.load()]
    assert migrations.apply_sqlite(conn, 0) == []


async def test_mixed_batches_report_the_ids_that_were_stored(store: SQLiteStore) -> None:
    await store.ensure_room(1, "al", 0)
    await store.ensure_room(2, "al", 0)
    ops = [
        insert(1, "al", "a"),
        InsertMessage(2, "al", "b", "text", 1, client_msg_id="x"),
        insert(2, "bo", "c"),
        insert(1, "bo", "d"),
        InsertMessage(2, "al", "b again", "text", 1, client_msg_id="x"),  # a retry
        insert(1, "al", "e"),
    ]
    results = await asyncio.gather(*(store.run(op) for op in ops))
    raw = sqlite3.connect(store.path)
    stored = dict(raw.execute("SELECT id, content FROM messages"))
    assert [stored[r.message_id] for r in results] == ["a", "b", "c", "d", "b", "e"]
    assert (
        results[4].duplicate_of is not None and results[4].duplicate_of.id == results[1].message_id
    )
    assert [r.room_id for r in results] == [1, 2, 2, 1, 2, 1]
    reused = await store.run(InsertMessage(1, "al", "c", "text", 1, client_msg_id="x"))
    assert reused.outcome is Outcome.CONFLICT  # the same id elsewhere is not a retry
