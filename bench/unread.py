"""What a user's unread counts cost, and that it does not grow with the history.

    .venv/bin/python bench/unread.py                    # SQLite, 200 rooms x 100,000 messages
    .venv/bin/python bench/unread.py --engine postgres  # the same on PostgreSQL
    .venv/bin/python bench/unread.py --rooms 50 --messages 20000 --repeat 50

``Store.unread(user)`` answers, for every room the user is a member of, how many
timeline messages follow their read marker (not their own, not deleted, counting
stops at ``UNREAD_COUNT_LIMIT``), how many mentions of them are unread and which
message is the room's newest. A client asks for it on every connect, so it has
to stay cheap in rooms with years of history: each count is meant to be an index
range from the marker, never a scan of the room.

This builds two fresh databases side by side in one run, each with ``--rooms``
rooms and one user, ``reader``, a member of them all: one whose rooms hold
``--messages`` messages each (several authors, interleaved across the rooms as
real traffic is), and one whose rooms hold a hundredth of that. A quarter of the
rooms have three unread mentions of the reader. The rows are written with bulk
SQL straight into the schema the store created (its own ``start()``), which is
far faster than sending messages through it; the fill time is printed apart.

Then for three positions of the reader's markers (an ``UPDATE`` of
``room_members.read_id``) it times ``store.unread("reader")`` over all rooms,
``--repeat`` times after two warm-up calls, and checks every count:

* ``newest``: each marker at the room's newest message, nothing unread;
* ``50 back``: 50 messages unread in every room;
* ``zero``: the marker before everything, every message unread (the count stops
  at ``UNREAD_COUNT_LIMIT``).

The last table lines are the ratio of the long history's median to the short
one's: near 1 means the cost does not depend on how long the history is. (With
``--messages`` under 100,000 the short rooms hold fewer than ``UNREAD_COUNT_LIMIT``
messages, so their ``zero`` case counts fewer and that ratio is not like for like.)

SQLite uses a temporary directory (deleted at the end). PostgreSQL uses the
schemas ``bench_unread_<messages>`` of ``--postgres-url``'s database (the store
creates them from ``search_path``), dropped before and after; after the fill
they get a ``VACUUM ANALYZE``, as autovacuum would give them. SQLite gets no
``ANALYZE``, as the server never runs one. The PostgreSQL store turns JIT
compilation off for its connections: the planner's estimate for the unread
query grows with the tables and switched it on, at about 110 ms a call.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from roomcast.adapters.postgres_store import PostgresStore
from roomcast.adapters.sql.store import SQLStore
from roomcast.adapters.sqlite_store import SQLiteStore
from roomcast.clock import wall_ms
from roomcast.protocol import UNREAD_COUNT_LIMIT, RoomUnread

POSTGRES_URL = os.environ.get("ROOMCAST_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
READER = "reader"
AUTHORS = 7
#: Rooms with ``room_id % MENTION_EVERY == 1`` hold MENTIONS unread mentions of the reader.
MENTION_EVERY = 4
MENTIONS = 3
WARMUP = 2
#: Milliseconds between two messages of the generated history (all rooms together).
SPACING_MS = 250
#: Where each case puts every marker: SQL for the reader's ``read_id`` in the room
#: ``room_members.room_id``, and the unread count each room must then report.
BACK = 50
CASES: list[tuple[str, str]] = [
    (
        "newest",
        "(SELECT COALESCE(MAX(id), 0) FROM messages WHERE messages.room_id = room_members.room_id)",
    ),
    (
        f"{BACK} back",
        "(SELECT id FROM messages WHERE messages.room_id = room_members.room_id "
        f"ORDER BY id DESC LIMIT 1 OFFSET {BACK})",
    ),
    ("zero", "0"),
]


def expected_unread(case: str, messages: int) -> int:
    if case == "newest":
        return 0
    if case == "zero":
        return min(messages, UNREAD_COUNT_LIMIT)
    return BACK


def fill_statements(rooms: int, messages: int, generate: str, start_ms: int) -> list[str]:
    """The bulk inserts; ``generate`` is a ``FROM`` clause yielding ``i`` = 0, 1, ... ."""
    total = rooms * messages
    # Message i goes to room i % rooms: ids grow with time across all rooms, and
    # a room's messages are spread over the table as real traffic leaves them.
    # Both series yield i in order, and rows are numbered in the order inserted
    # (an ORDER BY would make SQLite sort every row first).
    message_rows = (
        "INSERT INTO messages (room_id, user_id, content, type, created_at, seq, thread_id) "
        f"SELECT i % {rooms} + 1, 'author' || (i % {AUTHORS}), 'message number ' || i, 'text', "
        f"{start_ms} + i * {SPACING_MS}, i / {rooms} + 1, NULL "
        f"FROM {generate.format(first=0, last=total - 1)}"
    )
    # Each mentioning room's 10th, 20th, ... newest message (index reads, no scan).
    mentioned = " UNION ALL ".join(
        "SELECT (SELECT id FROM messages x WHERE x.room_id = r.id "
        f"ORDER BY x.id DESC LIMIT 1 OFFSET {10 * k}) FROM rooms r "
        f"WHERE r.id % {MENTION_EVERY} = 1"
        for k in range(1, MENTIONS + 1)
    )
    authors = " UNION ALL ".join(f"SELECT 'author{a}' AS user_id" for a in range(AUTHORS))
    return [
        "INSERT INTO rooms (id, name, private, created_by, created_at, last_seq) "
        f"SELECT i, 'room ' || i, 0, 'author0', {start_ms}, {messages} "
        f"FROM {generate.format(first=1, last=rooms)}",
        f"UPDATE room_numbering SET next_id = {rooms + 1}",
        f"INSERT INTO room_creators (user_id, rooms) VALUES ('author0', {rooms})",
        "INSERT INTO room_members (room_id, user_id, role, joined_at, read_id) "
        f"SELECT rooms.id, a.user_id, CASE WHEN a.user_id = 'author0' THEN 'owner' "
        f"ELSE 'member' END, {start_ms}, 0 FROM rooms, ({authors}) AS a",
        "INSERT INTO room_members (room_id, user_id, role, joined_at, read_id) "
        f"SELECT id, '{READER}', 'member', {start_ms}, 0 FROM rooms",
        message_rows,
        "INSERT INTO notifications (user_id, kind, room_id, message_id, thread_id, "
        "from_user_id, excerpt, created_at) "
        f"SELECT '{READER}', 'mention', room_id, id, NULL, user_id, content, created_at "
        f"FROM messages WHERE id IN ({mentioned})",
        f"UPDATE messages SET mentions = '[\"{READER}\"]' WHERE id IN "
        f"(SELECT message_id FROM notifications WHERE user_id = '{READER}')",
    ]


class Bench:
    """One fresh database, its store, and a plain connection for the bench's own SQL."""

    engine = ""

    def __init__(self, rooms: int, messages: int) -> None:
        self.rooms = rooms
        self.messages = messages
        self.fill_seconds = 0.0

    @property
    def store(self) -> SQLStore:
        raise NotImplementedError

    async def open(self) -> None:
        raise NotImplementedError

    async def execute(self, sql: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class SQLiteBench(Bench):
    engine = "sqlite"

    def __init__(self, rooms: int, messages: int, folder: Path) -> None:
        super().__init__(rooms, messages)
        self.path = folder / f"unread-{messages}.db"
        self._store: SQLiteStore | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def store(self) -> SQLStore:
        assert self._store is not None
        return self._store

    def _new_store(self) -> SQLiteStore:
        return SQLiteStore(f"sqlite:///{self.path}", wall_ms)

    async def open(self) -> None:
        schema = self._new_store()
        await schema.start()  # creates the schema
        await schema.close()
        started = time.perf_counter()
        conn = sqlite3.connect(self.path, isolation_level=None)
        # Alone on the file: no journal while filling (a crash only loses the bench).
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -524288")  # 512 MiB
        conn.execute("BEGIN")
        series = (
            "(WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL "
            "SELECT i + 1 FROM n WHERE i < {last}) SELECT i FROM n) AS n"
        )
        for sql in fill_statements(self.rooms, self.messages, series, wall_ms()):
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.close()
        self.fill_seconds = time.perf_counter() - started
        self._store = self._new_store()
        await self._store.start()
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout = 5000")

    async def execute(self, sql: str) -> None:
        assert self._conn is not None
        self._conn.execute(sql)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._store is not None:
            await self._store.close()


class PostgresBench(Bench):
    engine = "postgres"

    def __init__(self, rooms: int, messages: int, url: str) -> None:
        super().__init__(rooms, messages)
        self.schema = f"bench_unread_{messages}"
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
        self.base_url = urlunsplit(parts._replace(query=urlencode(query)))
        query.append(("search_path", self.schema))
        self.url = urlunsplit(parts._replace(query=urlencode(query)))
        self._store: PostgresStore | None = None
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None

    @property
    def store(self) -> SQLStore:
        assert self._store is not None
        return self._store

    async def drop_schema(self) -> None:
        conn = await asyncpg.connect(self.base_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()

    async def open(self) -> None:
        await self.drop_schema()
        self._store = PostgresStore(self.url, wall_ms)
        await self._store.start()  # creates the schema and its tables
        self._conn = await asyncpg.connect(self.url)
        started = time.perf_counter()
        series = "generate_series({first}::bigint, {last}::bigint) AS i"
        async with self._conn.transaction():
            for sql in fill_statements(self.rooms, self.messages, series, wall_ms()):
                await self._conn.execute(sql)
        await self._conn.execute("VACUUM ANALYZE messages, rooms, room_members, notifications")
        self.fill_seconds = time.perf_counter() - started

    async def execute(self, sql: str) -> None:
        assert self._conn is not None
        await self._conn.execute(sql)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        if self._store is not None:
            await self._store.close()
        await self.drop_schema()


@dataclass
class Row:
    engine: str
    messages: int
    case: str
    unread: int
    median_ms: float
    p95_ms: float


def check(counts: list[RoomUnread], bench: Bench, case: str) -> int:
    """The unread count every room reported; raises if any count is not what it must be."""
    want = expected_unread(case, bench.messages)
    if len(counts) != bench.rooms:
        raise AssertionError(f"{len(counts)} rooms reported, {bench.rooms} expected")
    for count in counts:
        mentions = MENTIONS if count.room_id % MENTION_EVERY == 1 else 0
        if (count.unread, count.mentions) != (want, mentions):
            raise AssertionError(
                f"{case}: room {count.room_id} reports {count.unread} unread and "
                f"{count.mentions} mentions, {want} and {mentions} expected"
            )
    return want


def p95(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


async def measure(bench: Bench, repeat: int) -> list[Row]:
    rows = []
    for case, marker in CASES:
        await bench.execute(f"UPDATE room_members SET read_id = {marker} WHERE user_id = 'reader'")
        for _ in range(WARMUP):
            counts = await bench.store.unread(READER)
        unread = check(counts, bench, case)
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            counts = await bench.store.unread(READER)
            samples.append((time.perf_counter() - started) * 1000)
        check(counts, bench, case)
        median = statistics.median(samples)
        rows.append(Row(bench.engine, bench.messages, case, unread, median, p95(samples)))
    return rows


def render(rows: Sequence[Row], rooms: int) -> str:
    lines = [
        f"{'engine':<9} {'messages/room':>13}  {'marker':<8} {'unread/room':>11} "
        f"{'median ms':>10} {'p95 ms':>9} {'µs/room':>8}"
    ]
    for row in rows:
        lines.append(
            f"{row.engine:<9} {row.messages:>13,}  {row.case:<8} {row.unread:>11,} "
            f"{row.median_ms:>10.2f} {row.p95_ms:>9.2f} {row.median_ms * 1000 / rooms:>8.1f}"
        )
    return "\n".join(lines)


def render_ratios(rows: Sequence[Row], long: int, short: int) -> str:
    lines = [f"median with {long:,} messages/room over median with {short:,}:"]
    by_key = {(row.messages, row.case): row for row in rows}
    for case, _ in CASES:
        ratio = by_key[long, case].median_ms / by_key[short, case].median_ms
        lines.append(f"  {case:<8} {ratio:5.2f}x")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> None:
    long, short = args.messages, max(args.messages // 100, 2 * BACK)
    folder = Path(tempfile.mkdtemp(prefix="roomcast-unread-"))
    rows: list[Row] = []
    print(
        f"unread counts of one member of {args.rooms} rooms, {args.engine}, "
        f"{args.repeat} calls per case (UNREAD_COUNT_LIMIT {UNREAD_COUNT_LIMIT})",
        flush=True,
    )
    try:
        for messages in (short, long):
            bench: Bench
            if args.engine == "sqlite":
                bench = SQLiteBench(args.rooms, messages, folder)
            else:
                bench = PostgresBench(args.rooms, messages, args.postgres_url)
            try:
                await bench.open()
                print(
                    f"  filled {args.rooms} rooms x {messages:,} messages "
                    f"({args.rooms * messages:,} rows) in {bench.fill_seconds:.1f} s",
                    flush=True,
                )
                rows += await measure(bench, args.repeat)
            finally:
                await bench.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print(render(rows, args.rooms))
    print()
    print(render_ratios(rows, long, short))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_URL,
        help="PostgreSQL database; the bench's schemas are made (and dropped) in it",
    )
    parser.add_argument("--rooms", type=int, default=200, help="rooms the reader is in")
    parser.add_argument(
        "--messages",
        type=int,
        default=100_000,
        help="messages per room of the long history (the short one has a hundredth)",
    )
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per case")
    args = parser.parse_args(argv)
    if args.rooms < 1 or args.messages < 2 * BACK or args.repeat < 1:
        parser.error(f"--rooms and --repeat must be positive, --messages at least {2 * BACK}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    asyncio.run(run(args))
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
