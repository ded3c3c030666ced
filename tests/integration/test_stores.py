"""Both stores on real databases: group commit, rules inside the transaction, history,
room sequence numbers, migrations, and PostgreSQL going away and coming back.

Every test taking ``db`` runs on a SQLite file and on PostgreSQL (each test in
a fresh schema, dropped afterwards). PostgreSQL is at ``ROOMCAST_TEST_POSTGRES``
(default: the local server); without it the PostgreSQL cases are skipped,
unless that variable or ``CI`` is set, in which case they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

from roomcast.adapters import migrations
from roomcast.adapters.postgres_store import PostgresStore
from roomcast.adapters.sqlite_store import SQLiteStore, sqlite_path
from roomcast.adapters.stores import migrate, open_store
from roomcast.config import Settings, describe
from roomcast.core.calls import CallRecord
from roomcast.ports.store import (
    DeleteMessage,
    EditMessage,
    InsertMessage,
    Operation,
    Outcome,
    ProbeWrite,
    StoreUnavailable,
    ToggleReaction,
)
from tests.harness.server import free_port

POSTGRES = os.environ.get("ROOMCAST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
POSTGRES_REQUIRED = bool(os.environ.get("ROOMCAST_TEST_POSTGRES") or os.environ.get("CI"))

Store = SQLiteStore | PostgresStore


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), *params.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def admin_connection() -> asyncpg.Connection[asyncpg.Record]:
    try:
        return await asyncpg.connect(POSTGRES, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        if POSTGRES_REQUIRED:
            raise
        pytest.skip(f"no PostgreSQL at {POSTGRES}: {exc!r}")


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A fresh schema, dropped afterwards: the URL that works in it."""
    admin = await admin_connection()
    schema = f"t_{secrets.token_hex(6)}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_query(POSTGRES, search_path=schema)
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@dataclass
class Database:
    kind: str  # "sqlite" or "postgres"
    url: str

    def open(self, **kwargs: Any) -> Store:
        """A store on this database (not started); several may share it."""
        if self.kind == "postgres":
            return PostgresStore(self.url, lambda: 1000, **kwargs)
        return SQLiteStore(self.url, lambda: 1000, **kwargs)

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a query run beside the store, as another client would."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(sqlite_path(self.url))) as conn:
                return conn.execute(sql).fetchall()
        pg_conn = await asyncpg.connect(self.url)
        try:
            return [tuple(row) for row in await pg_conn.fetch(sql)]
        finally:
            await pg_conn.close()


async def database_before(
    db: Database, monkeypatch: pytest.MonkeyPatch, version: int, statements: list[str]
) -> None:
    """Bring ``db`` to the schema before migration ``version`` and run
    ``statements`` there: a database in use before that migration. The store
    opened afterwards applies the rest."""
    everything = migrations.load()
    monkeypatch.setattr(migrations, "load", lambda: [m for m in everything if m.version < version])
    if db.kind == "sqlite":
        conn = sqlite3.connect(sqlite_path(db.url), isolation_level=None)
        migrations.apply_sqlite(conn, 0)
        for statement in statements:
            conn.execute(statement)
        conn.close()
    else:
        pg_conn = await asyncpg.connect(db.url)
        await migrations.apply_postgres(pg_conn, 0)
        for statement in statements:
            await pg_conn.execute(statement)
        await pg_conn.close()
    monkeypatch.setattr(migrations, "load", lambda: everything)


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        yield Database("sqlite", f"sqlite:///{tmp_path / 'rc.db'}")
        return
    async with postgres_schema() as url:
        yield Database("postgres", url)


@pytest.fixture
async def pg() -> AsyncIterator[Database]:
    async with postgres_schema() as url:
        yield Database("postgres", url)


@pytest.fixture
async def store(db: Database) -> AsyncIterator[Store]:
    store = db.open()
    await store.start()
    yield store
    await store.close()


def insert(room: int, user: str, text: str, client_msg_id: str | None = None) -> InsertMessage:
    return InsertMessage(
        room_id=room,
        user_id=user,
        content=text,
        kind="text",
        created_at=1,
        client_msg_id=client_msg_id,
    )


def test_url_forms() -> None:
    assert sqlite_path("sqlite:///rel.db") == "rel.db"
    assert sqlite_path("sqlite:////abs/x.db") == "/abs/x.db"
    assert sqlite_path("plain.db") == "plain.db"
    with pytest.raises(ValueError):
        sqlite_path("sqlite:///:memory:")


def test_open_store_picks_the_store_by_url(tmp_path: Path) -> None:
    settings = Settings()
    assert isinstance(open_store(f"sqlite:///{tmp_path}/a.db", settings, None), SQLiteStore)
    assert isinstance(open_store(str(tmp_path / "b.db"), settings, None), SQLiteStore)
    assert isinstance(open_store("postgresql://u@h/d", settings, None), PostgresStore)
    assert isinstance(open_store("postgres://u@h/d", settings, None), PostgresStore)
    with pytest.raises(ValueError, match="unsupported"):
        open_store("mysql://u:secret@h/d", settings, None)
    assert describe("postgresql://u:secret@h:5/d?x=1") == "postgresql://u:***@h:5/d?x=1"


async def test_concurrent_submissions_share_transactions_and_keep_order(store: Store) -> None:
    await store.ensure_room(1, "al", 0)
    futures = [store.run(insert(1, "al", f"m{i}")) for i in range(500)]
    results = await asyncio.gather(*futures)
    ids = [r.message_id for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 500
    assert [r.seq for r in results] == list(range(1, 501))
    history = await store.history(1, None, 100)
    assert [m.content for m in history] == [f"m{i}" for i in range(400, 500)]


@pytest.mark.parametrize("count", [1, 7, 64, 100, 131])
async def test_every_message_of_a_batch_gets_the_id_of_its_own_row(
    db: Database, store: Store, count: int
) -> None:
    await store.ensure_room(1, "al", 0)
    await store.ensure_room(2, "al", 0)
    results = await asyncio.gather(
        *(store.run(insert(1 + i % 2, f"u{i % 3}", f"m{i}")) for i in range(count))
    )
    rows = {
        message_id: (room, user, content, seq)
        for message_id, room, user, content, seq in await db.fetch(
            "SELECT id, room_id, user_id, content, seq FROM messages"
        )
    }
    assert len(rows) == count
    for i, result in enumerate(results):
        assert rows[result.message_id] == (1 + i % 2, f"u{i % 3}", f"m{i}", result.seq)
    assert [r.seq for r in results if r.room_id == 1] == list(range(1, (count + 1) // 2 + 1))


async def test_edit_delete_and_reactions_follow_the_rules(db: Database, store: Store) -> None:
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
    # The content is gone from storage.
    assert await db.fetch(f"SELECT content FROM messages WHERE id = {mine}") == [(None,)]


async def test_history_pages_walk_back_to_the_start(store: Store) -> None:
    await store.ensure_room(3, "al", 0)
    for i in range(7):
        await store.run(insert(3, "al", str(i)))
    page1 = await store.history(3, None, 3)
    page2 = await store.history(3, page1[0].id, 3)
    page3 = await store.history(3, page2[0].id, 3)
    assert [m.content for m in page3 + page2 + page1] == [str(i) for i in range(7)]


async def test_private_rooms_and_listing(store: Store) -> None:
    public = await store.create_room("lobby", False, (), "al", 0)
    secret = await store.create_room("secret", True, ("bo", "al", "bo"), "al", 0)
    assert secret.members == ("al", "bo")
    assert secret.admits("bo") and not secret.admits("cy") and public.admits(None)
    assert [r.name for r in await store.list_rooms("cy")] == ["lobby"]
    assert [r.name for r in await store.list_rooms("bo")] == ["lobby", "secret"]
    assert (await store.list_rooms("bo"))[1].members == ("al", "bo")
    assert (await store.ensure_room(secret.id, "cy", 0)).private  # never overwritten
    assert await store.get_room(secret.id) == secret
    assert await store.get_room(999) is None


async def test_rooms_created_after_an_explicit_id_get_new_ids(store: Store) -> None:
    """Created rooms are numbered on, stepping over ids that open mode's rooms
    took; an id near the top of the range does not use the numbering up."""
    first = await store.create_room("a", False, (), "al", 0)
    await store.ensure_room(first.id + 1, "al", 0)
    await store.ensure_room(first.id + 5, "al", 0)
    await store.ensure_room(2**53 - 1, "al", 0)
    created = [await store.create_room(f"r{i}", False, (), "al", 0) for i in range(4)]
    assert [room.id for room in created] == [first.id + n for n in (2, 3, 4, 6)]


async def test_calls_are_upserted_and_listed_newest_first(store: Store) -> None:
    await store.run(CallRecord("c1", "al", "bo", 10, None, None, None))
    await store.run(CallRecord("c1", "al", "bo", 10, 12, 20, "ended"))
    await store.run(CallRecord("c2", "bo", "cy", 30, None, 31, "rejected"))
    calls = await store.list_calls("bo", 10)
    assert [c.call_id for c in calls] == ["c2", "c1"]
    assert calls[1] == CallRecord("c1", "al", "bo", 10, 12, 20, "ended")
    assert await store.list_calls("cy", 10) == [calls[0]]


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
    kept = await store.run(insert(1, "al", "kept"))
    assert (kept.outcome, kept.seq) == (Outcome.DONE, 1)  # the failed batch used no number
    assert [m.content for m in await store.history(1, None, 10)] == ["kept"]
    await store.close()


async def test_a_probe_write_rewrites_its_one_row(db: Database, store: Store) -> None:
    for written_at in (5, 7):
        assert (await store.run(ProbeWrite(written_at))).outcome is Outcome.DONE
    assert await db.fetch("SELECT id, written_at FROM write_probe") == [(1, 7)]


async def test_close_commits_everything_submitted(db: Database) -> None:
    store = db.open()
    await store.start()
    await store.ensure_room(1, "al", 0)
    futures = [store.run(insert(1, "al", str(i))) for i in range(50)]
    await store.close()
    assert all(f.done() and not f.exception() for f in futures)
    assert await db.fetch("SELECT count(*) FROM messages") == [(50,)]


async def test_mixed_batches_report_the_ids_that_were_stored(db: Database, store: Store) -> None:
    await store.ensure_room(1, "al", 0)
    await store.ensure_room(2, "al", 0)
    ops = [
        insert(1, "al", "a"),
        insert(2, "al", "b", client_msg_id="x"),
        insert(2, "bo", "c"),
        insert(1, "bo", "d"),
        insert(2, "al", "b again", client_msg_id="x"),  # a retry
        insert(1, "al", "e"),
    ]
    results = await asyncio.gather(*(store.run(op) for op in ops))
    stored = dict(await db.fetch("SELECT id, content FROM messages"))
    assert [stored[r.message_id] for r in results] == ["a", "b", "c", "d", "b", "e"]
    assert (
        results[4].duplicate_of is not None and results[4].duplicate_of.id == results[1].message_id
    )
    assert [r.room_id for r in results] == [1, 2, 2, 1, 2, 1]
    # The retry reports the original's number and uses none of its own.
    assert [r.seq for r in results] == [1, 1, 2, 2, 1, 3]
    reused = await store.run(insert(1, "al", "c", client_msg_id="x"))
    assert reused.outcome is Outcome.CONFLICT  # the same id elsewhere is not a retry


# -- room sequence numbers ------------------------------------------------------------


async def test_each_room_numbers_its_messages_without_gaps(db: Database, store: Store) -> None:
    await store.ensure_room(1, "al", 0)
    await store.ensure_room(2, "al", 0)
    first = await store.run(insert(1, "al", "one", client_msg_id="k"))
    ops = [
        insert(2, "al", "a"),
        insert(1, "al", "one again", client_msg_id="k"),  # retried from an earlier batch
        insert(1, "bo", "b", client_msg_id="k"),  # another user's id: not a retry
        insert(2, "al", "c", client_msg_id="k"),  # reused elsewhere: refused, no number
        insert(1, "al", "d"),
        insert(1, "cy", "e", client_msg_id="n"),
        insert(1, "cy", "e again", client_msg_id="n"),  # retried within the batch
    ]
    results = await asyncio.gather(*(store.run(op) for op in ops))
    assert [r.outcome for r in results] == [Outcome.DONE] * 3 + [Outcome.CONFLICT] + [
        Outcome.DONE
    ] * 3
    assert [r.seq for r in results] == [1, 1, 2, 0, 3, 4, 4]
    assert results[6].duplicate_of is not None
    assert results[6].duplicate_of.id == results[5].message_id
    assert results[1].message_id == first.message_id
    rows = await db.fetch("SELECT room_id, seq, id FROM messages ORDER BY room_id, seq")
    assert [(room, seq) for room, seq, _ in rows] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1)]
    ids = [message_id for room, _, message_id in rows if room == 1]
    assert ids == sorted(ids)  # seq order is id order
    room = await store.get_room(1)
    assert room is not None and room.last_seq == 4
    assert [r.last_seq for r in await store.list_rooms(None)] == [4, 1]
    assert (await store.ensure_room(2, "al", 0)).last_seq == 1


async def test_edits_and_deletes_in_a_batch_reach_retries_in_it(store: Store) -> None:
    await store.ensure_room(1, "al", 0)
    rooms = frozenset({1})
    kept = await store.run(insert(1, "al", "old", client_msg_id="k"))
    dropped = await store.run(insert(1, "al", "bye", client_msg_id="d"))
    ops: list[Operation] = [
        EditMessage(kept.message_id, "al", rooms, "new", 2),
        insert(1, "al", "old", client_msg_id="k"),
        DeleteMessage(dropped.message_id, "al", rooms, 3),
        insert(1, "al", "bye", client_msg_id="d"),
        insert(1, "al", "next"),
    ]
    results = await asyncio.gather(*(store.run(op) for op in ops))
    assert results[1].duplicate_of is not None and results[1].duplicate_of.content == "new"
    assert results[3].outcome is Outcome.NOT_FOUND  # stored, then deleted: stays deleted
    assert results[4].seq == 3


async def test_messages_in_seq_range_skip_deleted_ones(store: Store) -> None:
    await store.ensure_room(1, "al", 0)
    await store.ensure_room(2, "al", 0)
    stored = [await store.run(insert(1 + i % 2, "al", f"m{i}")) for i in range(10)]
    in_room_1 = [r for r in stored if r.room_id == 1]  # seqs 1..5
    await store.run(DeleteMessage(in_room_1[2].message_id, "al", frozenset({1}), 2))
    found = await store.messages_in_seq_range(1, 1, 5)
    assert [(m.seq, m.message.content) for m in found] == [(2, "m2"), (4, "m6"), (5, "m8")]
    assert [m.message.id for m in found] == [in_room_1[i].message_id for i in (1, 3, 4)]
    assert await store.messages_in_seq_range(1, 5, 9) == []
    assert [m.seq for m in await store.messages_in_seq_range(2, 0, 2)] == [1, 2]


async def test_messages_since_reads_up_to_a_sequence_number(store: Store) -> None:
    await store.ensure_room(1, "al", 0)
    stored = [await store.run(insert(1, "al", f"m{i}")) for i in range(8)]
    since = stored[1].message_id  # seen m0 and m1
    page, truncated = await store.messages_since(1, since, 6, 10)
    assert ([m.message.content for m in page], truncated) == (["m2", "m3", "m4", "m5"], False)
    page, truncated = await store.messages_since(1, since, 6, 2)
    assert ([m.seq for m in page], truncated) == ([5, 6], True)  # the newest two
    page, truncated = await store.messages_since(1, since, None, 6)
    assert ([m.seq for m in page], truncated) == ([3, 4, 5, 6, 7, 8], False)
    await store.run(DeleteMessage(stored[7].message_id, "al", frozenset({1}), 2))
    page, _ = await store.messages_since(1, stored[5].message_id, None, 10)
    assert [m.message.content for m in page] == ["m6"]
    # The newest three of those left since m1, with word that older ones were left out.
    page, truncated = await store.messages_since(1, since, None, 3)
    assert ([m.message.content for m in page], truncated) == (["m4", "m5", "m6"], True)


async def test_two_postgres_stores_number_one_room_without_gaps(pg: Database) -> None:
    """Two pools, as two server processes: every batch of each waits for the other's."""
    stores = [pg.open(max_batch=8), pg.open(max_batch=8)]
    for store in stores:
        await store.start()
    for room in (1, 2, 3):
        await stores[0].ensure_room(room, "al", 0)
    rng = random.Random(7)
    ops = [[insert(rng.choice((1, 2, 3)), f"u{n}", f"{n}-{i}") for i in range(300)] for n in (0, 1)]

    async def send(store: Store, batch: list[InsertMessage]) -> list[Any]:
        results = []
        for start in range(0, len(batch), 20):  # waves, so the two interleave
            chunk = batch[start : start + 20]
            results += await asyncio.gather(*(store.run(op) for op in chunk))
        return results

    results = await asyncio.gather(*(send(s, b) for s, b in zip(stores, ops, strict=True)))
    for store in stores:
        await store.close()
    rows = await pg.fetch("SELECT room_id, seq, id, content FROM messages ORDER BY room_id, seq")
    for room in (1, 2, 3):
        in_room = [row for row in rows if row[0] == room]
        assert [row[1] for row in in_room] == list(range(1, len(in_room) + 1))
        ids = [row[2] for row in in_room]
        assert ids == sorted(ids)
    assert len(rows) == 600
    by_content = {row[3]: (row[0], row[1], row[2]) for row in rows}
    for batch, batch_results in zip(ops, results, strict=True):
        for op, result in zip(batch, batch_results, strict=True):
            assert by_content[op.content] == (op.room_id, result.seq, result.message_id)
    last = dict(await pg.fetch("SELECT id, last_seq FROM rooms"))
    assert last == {room: sum(row[0] == room for row in rows) for room in (1, 2, 3)}


# -- migrations -----------------------------------------------------------------------


def test_sqlite_migrations_apply_once(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    assert migrations.apply_sqlite(conn, 0) == [m.version for m in migrations.load()]
    assert migrations.apply_sqlite(conn, 0) == []


async def test_postgres_migrations_apply_once(pg: Database) -> None:
    conn = await asyncpg.connect(pg.url)
    try:
        assert await migrations.apply_postgres(conn, 0) == [m.version for m in migrations.load()]
        assert await migrations.apply_postgres(conn, 0) == []
        recorded = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
        assert [tuple(r) for r in recorded] == [(m.version, m.name) for m in migrations.load()]
    finally:
        await conn.close()


async def test_postgres_migrations_from_two_connections_apply_each_once(pg: Database) -> None:
    conns = [await asyncpg.connect(pg.url) for _ in range(2)]
    try:
        applied = await asyncio.gather(*(migrations.apply_postgres(c, 0) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    assert sorted(applied[0] + applied[1]) == [m.version for m in migrations.load()]
    assert len(await pg.fetch("SELECT version FROM schema_migrations")) == len(migrations.load())


def test_postgres_translation_refuses_unknown_sqlite_spellings() -> None:
    sql = "-- AUTOINCREMENT in a comment is fine\nCREATE TABLE t (id INTEGER PRIMARY KEY);"
    assert "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" in migrations.postgres_sql(sql)
    with pytest.raises(ValueError, match="INSERT OR"):
        migrations.postgres_sql("INSERT OR IGNORE INTO t VALUES (1);")


async def test_room_sequence_migration_numbers_existing_messages(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database at 0003 with messages upgrades: seq by id within each room."""
    everything = migrations.load()
    versions = [m.version for m in everything]
    monkeypatch.setattr(migrations, "load", lambda: [m for m in everything if m.version < 4])
    statements = [
        "INSERT INTO rooms (id, name, private, created_at) VALUES (1, 'a', 0, 0), (2, 'b', 0, 0)",
        "INSERT INTO messages (id, room_id, user_id, content, created_at, deleted_at) VALUES "
        "(10, 1, 'al', 'a1', 0, NULL), (11, 2, 'al', 'b1', 0, NULL), "
        "(12, 1, 'al', NULL, 0, 5), (13, 1, 'al', 'a3', 0, NULL), (14, 2, 'al', 'b2', 0, NULL)",
    ]
    if db.kind == "sqlite":
        conn = sqlite3.connect(sqlite_path(db.url), isolation_level=None)
        assert migrations.apply_sqlite(conn, 0) == [1, 2, 3]
        for sql in statements:
            conn.execute(sql)
        monkeypatch.setattr(migrations, "load", lambda: everything)
        assert migrations.apply_sqlite(conn, 0) == [v for v in versions if v >= 4]
        conn.close()
    else:
        pg_conn = await asyncpg.connect(db.url)
        assert await migrations.apply_postgres(pg_conn, 0) == [1, 2, 3]
        for sql in statements:
            await pg_conn.execute(sql)
        monkeypatch.setattr(migrations, "load", lambda: everything)
        assert await migrations.apply_postgres(pg_conn, 0) == [v for v in versions if v >= 4]
        await pg_conn.close()
    rows = await db.fetch("SELECT id, seq FROM messages ORDER BY id")
    assert rows == [(10, 1), (11, 1), (12, 2), (13, 3), (14, 2)]
    assert sorted(await db.fetch("SELECT id, last_seq FROM rooms")) == [(1, 3), (2, 2)]
    store = db.open()
    await store.start()
    assert (await store.run(insert(1, "al", "a4"))).seq == 4
    assert [m.seq for m in await store.messages_in_seq_range(1, 0, 9)] == [1, 3, 4]
    await store.close()


async def test_a_migration_for_one_database_is_recorded_but_not_run_on_the_other(
    db: Database,
) -> None:
    """0005 drops the (room_id, seq) index on SQLite only; both record version 5."""
    store = db.open()
    await store.start()
    await store.close()
    assert (5,) in await db.fetch("SELECT version FROM schema_migrations")
    if db.kind == "sqlite":
        query = (
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'messages_by_room_seq'"
        )
        assert await db.fetch(query) == []
    else:
        query = (
            "SELECT indexname FROM pg_indexes "
            "WHERE indexname = 'messages_by_room_seq' AND schemaname = current_schema()"
        )
        assert await db.fetch(query) == [("messages_by_room_seq",)]


async def test_migrate_describes_what_it_did(db: Database) -> None:
    first = await migrate(db.url)
    assert "applied 0001, 0002, 0003, 0004, 0005" in first
    assert (await migrate(db.url)).endswith("up to date (nothing to apply)")


async def test_postgres_store_creates_its_schema() -> None:
    admin = await admin_connection()
    schema = f"t_{secrets.token_hex(6)}_new"
    store = PostgresStore(with_query(POSTGRES, search_path=schema), lambda: 0)
    try:
        await store.start()
        room = await store.ensure_room(1, "al", 0)
        assert room.last_seq == 0
        found = await admin.fetchval(f"SELECT count(*) FROM {schema}.rooms")
        assert found == 1
        await store.close()
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


# -- PostgreSQL going away --------------------------------------------------------------


class Proxy:
    """A TCP hop between a store and PostgreSQL that a test can cut or silence.

    Cutting closes every connection and refuses new ones, as a database that
    went down; silencing swallows everything, as a network that stopped
    answering. The database itself is never touched.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen_port = free_port()
        self.silent = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.listen_port, reuse_address=True
        )

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.silent:
                    writer.write(data)
                    await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)

    def url(self, base: str) -> str:
        parts = urlsplit(base)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.listen_port}" if user else f"127.0.0.1:{self.listen_port}"
        return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    parts = urlsplit(POSTGRES)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.cut()


async def fails_within(seconds: float, action: Callable[[], Any]) -> StoreUnavailable:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await action()
    assert time.monotonic() - started < seconds
    return caught.value


async def test_postgres_unreachable_at_start_fails_fast() -> None:
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/test", lambda: 0)
    await fails_within(2.0, store.start)


async def test_postgres_down_fails_within_the_timeout_and_recovers(
    pg: Database, proxy: Proxy
) -> None:
    store = PostgresStore(proxy.url(pg.url), lambda: 0, timeout=0.5)
    await store.start()
    await store.ensure_room(1, "al", 0)
    assert (await store.run(insert(1, "al", "before"))).seq == 1

    await proxy.cut()
    await fails_within(1.5, lambda: store.run(insert(1, "al", "lost")))
    await fails_within(1.5, store.ping)
    await fails_within(1.5, lambda: store.history(1, None, 10))

    await proxy.start()  # the database is back
    await store.ping()
    after = await store.run(insert(1, "al", "after"))
    assert (after.outcome, after.seq) == (Outcome.DONE, 2)
    assert [m.content for m in await store.history(1, None, 10)] == ["before", "after"]
    await store.close()


async def test_postgres_that_stops_answering_never_hangs(pg: Database, proxy: Proxy) -> None:
    store = PostgresStore(proxy.url(pg.url), lambda: 0, timeout=0.5)
    await store.start()
    await store.ensure_room(1, "al", 0)
    proxy.silent = True
    futures = [store.run(insert(1, "al", f"lost{i}")) for i in range(5)]
    started = time.monotonic()
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    assert time.monotonic() - started < 1.5
    await fails_within(1.5, store.ping)
    proxy.silent = False
    assert (await store.run(insert(1, "al", "kept"))).outcome is Outcome.DONE
    # Nothing swallowed by the silent network was committed.
    assert await pg.fetch("SELECT content, seq FROM messages") == [("kept", 1)]
    await store.close()


async def test_terminated_backends_mid_run_lose_nothing_reported_committed(
    pg: Database,
) -> None:
    name = f"rc_{secrets.token_hex(4)}"
    store = PostgresStore(with_query(pg.url, application_name=name), lambda: 0, max_batch=16)
    await store.start()
    await store.ensure_room(1, "al", 0)
    admin = await asyncpg.connect(POSTGRES)

    async def terminate() -> None:
        for _ in range(10):
            await asyncio.sleep(0.01)
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                name,
            )

    futures = [store.run(insert(1, "al", f"m{i}")) for i in range(400)]
    killer = asyncio.create_task(terminate())
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    await killer
    await admin.close()
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    assert all(isinstance(o, StoreUnavailable) for o in outcomes if isinstance(o, BaseException))
    rows = dict(await pg.fetch("SELECT id, seq FROM messages"))
    for result in done:
        assert rows[result.message_id] == result.seq  # reported committed: it is
    assert sorted(rows.values()) == list(range(1, len(rows) + 1))  # no gaps
    assert (await store.run(insert(1, "al", "later"))).seq == len(rows) + 1
    await store.close()


async def test_a_writer_killed_while_waiting_for_a_room_is_retried(pg: Database) -> None:
    """The batch dies before COMMIT, so it is safe to run again: no error, no gap."""
    name = f"rc_{secrets.token_hex(4)}"
    store = PostgresStore(with_query(pg.url, application_name=name), lambda: 0)
    await store.start()
    await store.ensure_room(1, "al", 0)
    await store.run(insert(1, "al", "first"))
    admin = await asyncpg.connect(POSTGRES)

    async def kill_waiting_writer() -> None:
        while not await admin.fetchval(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1 AND wait_event_type = 'Lock'",
            name,
        ):
            await asyncio.sleep(0.01)

    # Another process holds the room: the store's batch waits for it...
    other = await asyncpg.connect(pg.url)
    holding = other.transaction()
    await holding.start()
    await other.execute("SELECT 1 FROM rooms WHERE id = 1 FOR UPDATE")
    futures = [store.run(insert(1, "al", f"m{i}")) for i in range(20)]
    # ...and is killed while it waits; its next try waits again, then runs.
    await asyncio.wait_for(kill_waiting_writer(), 2)
    await asyncio.wait_for(kill_waiting_writer(), 2)
    await holding.commit()
    results = await asyncio.gather(*futures)
    assert [r.seq for r in results] == list(range(2, 22))
    assert await pg.fetch("SELECT count(*), max(seq) FROM messages") == [(21, 21)]
    # Idle connections killed under the pool: the next operation just works.
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", name
    )
    assert (await store.run(insert(1, "al", "after"))).seq == 22
    await store.ping()
    for conn in (other, admin):
        await conn.close()
    await store.close()


async def test_two_stores_on_one_database_take_turns_without_repeating_a_seq(
    db: Database,
) -> None:
    """Two processes' stores writing one room in turn (an old server still
    finishing while a new one starts): every message gets its own number."""
    first, second = db.open(), db.open()
    await first.start()
    await second.start()
    try:
        await first.ensure_room(1, "al", 0)
        seqs = []
        for store in (first, second, first, second, first):
            seqs.append((await store.run(insert(1, "al", "hi"))).seq)
        assert seqs == [1, 2, 3, 4, 5]
        room = await second.get_room(1)
        assert room is not None and room.last_seq == 5
    finally:
        await first.close()
        await second.close()
