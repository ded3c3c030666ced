"""The embedded store: one SQLite file in WAL mode.

Writes run on the event loop's own thread, one group-committed transaction
after another. That is deliberate: with WAL and ``synchronous=NORMAL`` a
commit appends to the log without ``fsync``, so a transaction of a few dozen
messages takes tens of microseconds, far less than handing it to a thread and
back (measured: the thread hop and the GIL handover cost more CPU than the
SQL). What could block the loop is kept off it:

* checkpoints, which do ``fsync``, run on a thread of their own
  (:mod:`roomcast.adapters.sqlite_wal`); they keep the WAL under ``max_wal_bytes``;
* a database locked by another process is never waited for inside SQLite:
  the writer's busy timeout is zero and the transaction is retried with
  ``asyncio.sleep`` until ``timeout`` has passed, then fails.

Reads (history, rooms) run on a separate thread and connection; WAL lets them
proceed while a write transaction is open.

``synchronous=NORMAL`` in WAL mode means a committed transaction survives a
crash of the process; only a power loss can roll back the last commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from roomcast.adapters import migrations
from roomcast.adapters import store_rules as rules
from roomcast.adapters.sqlite_wal import WalCheckpointer, run_on
from roomcast.config import sqlite_path
from roomcast.core.calls import CallRecord
from roomcast.ports.group_commit import Done, GroupCommitter
from roomcast.ports.store import (
    CallsAfter,
    DeleteMessage,
    EditMessage,
    InsertMessage,
    Operation,
    Outcome,
    ProbeWrite,
    Result,
    Room,
    RoomLimitReached,
    SequencedMessage,
    StoreUnavailable,
    ToggleReaction,
)
from roomcast.protocol import HistoryMessage

T = TypeVar("T")

log = logging.getLogger("roomcast.store")

#: A room's last sequence number: that of its newest message, since seq order is
#: id order within a room (the (room_id, id) index finds it at once).
_LAST_SEQ = (
    "SELECT seq FROM messages WHERE messages.room_id = rooms.id ORDER BY messages.id DESC LIMIT 1"
)

#: Rooms as :data:`store_rules.ROOM_COLUMNS`, with ``last_seq`` taken from the
#: messages (this store does not keep ``rooms.last_seq`` up to date; see
#: ``SQLiteStore._numbering``).
_ROOM_COLUMNS = rules.ROOM_COLUMNS.replace("last_seq", "COALESCE((" + _LAST_SEQ + "), 0)")


class SQLiteStore:
    def __init__(
        self,
        url: str,
        clock_ms: Callable[[], int],
        max_batch: int = 1024,
        on_commit: Callable[[int, float, bool], None] | None = None,
        timeout: float = 5.0,
        linger: float = 0.0,
        max_wal_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.path = sqlite_path(url)
        self._timeout_ms = int(timeout * 1000)
        self._clock_ms = clock_ms
        self._reader_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._writer: sqlite3.Connection | None = None
        self._wal = WalCheckpointer(self.path, max_wal_bytes, self._connect)
        # Each room's last sequence number, as committed (see _numbering), and
        # the file's data_version when it was last known right.
        self._last_seq: dict[int, int] = {}
        self._data_version = -1
        self._reader: sqlite3.Connection | None = None
        self._committer: GroupCommitter[Operation, Result] = GroupCommitter(
            self._execute_batch, max_batch, on_commit, linger
        )

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc
        self._writer = await self._on_writer(self._open_writer)
        self._reader = await self._on_reader(self._connect)
        await self._wal.start()
        self._committer.start()

    def _connect(self, busy_timeout_ms: int | None = None) -> sqlite3.Connection:
        # isolation_level=None: transactions are opened explicitly below.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        timeout = self._timeout_ms if busy_timeout_ms is None else busy_timeout_ms
        conn.execute(f"PRAGMA busy_timeout = {timeout}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        conn = self._connect(busy_timeout_ms=0)  # waiting happens in _on_writer
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # see sqlite_wal
        # When a writer restarts the log after a complete checkpoint, a larger
        # file is cut back to the threshold instead of staying at its high-water size.
        conn.execute(f"PRAGMA journal_size_limit = {self._wal.threshold}")
        migrations.apply_sqlite(conn, self._clock_ms())
        return conn

    async def close(self) -> None:
        await self._committer.close()
        await self._wal.close()
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._writer.close()
        if self._reader is not None:
            await loop.run_in_executor(self._reader_thread, self._reader.close)
        self._reader_thread.shutdown(wait=True)
        self._writer = self._reader = None

    async def _on_writer(self, fn: Callable[[], T]) -> T:
        """Run a write on this thread; a database locked elsewhere is retried, not waited on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_ms / 1000
        delay = 0.001
        while True:
            if not self._wal.writes_open.is_set():
                await self._wal.writes_open.wait()
            try:
                result = fn()
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or loop.time() >= deadline:
                    raise StoreUnavailable(str(exc)) from exc
            except sqlite3.Error as exc:
                raise StoreUnavailable(str(exc)) from exc
            else:
                self._wal.watch()
                return result
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _on_reader(self, fn: Callable[[], T]) -> T:
        return await run_on(self._reader_thread, fn)

    def _w(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StoreUnavailable("the store is closed")
        return self._writer

    def _r(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreUnavailable("the store is closed")
        return self._reader

    async def ping(self) -> None:
        await self._on_reader(lambda: self._r().execute("SELECT 1").fetchone())

    # -- group-committed writes -----------------------------------------------------

    def submit(self, op: Operation, done: Done[Result]) -> None:
        self._committer.submit(op, done)

    def run(self, op: Operation) -> asyncio.Future[Result]:
        return self._committer.run(op)

    async def _execute_batch(self, ops: Sequence[Operation]) -> list[Result]:
        return await self._on_writer(lambda: self._transaction(ops))

    def _transaction(self, ops: Sequence[Operation]) -> list[Result]:
        conn = self._w()
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process wrote to the file since this one last committed:
            # its room numbers may have moved on, so count them again.
            data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            if data_version != self._data_version:
                self._last_seq.clear()
                self._data_version = data_version
            stored = [
                row
                for key in rules.client_ids(ops)
                for row in conn.execute(
                    f"SELECT {rules.MESSAGE_COLUMNS} FROM messages "
                    "WHERE user_id = ? AND client_msg_id = ?",
                    key,
                )
            ]
            plan = rules.InsertPlan(ops, stored)
            last_seqs = self._numbering(conn, plan.counts)
            plan.begin(last_seqs)
            results: list[Result] = []
            for item in rules.runs(ops):
                if isinstance(item, list):
                    results += self._insert_run(conn, plan.run(item))
                else:
                    results.append(self._apply(conn, plan, item))
            plan.finish()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._last_seq.update(last_seqs)
        return results

    def _numbering(self, conn: sqlite3.Connection, counts: dict[int, int]) -> dict[int, int]:
        """Each room's last sequence number after this batch's inserts.

        A room's last number is remembered here instead of being written to
        ``rooms.last_seq`` in every transaction: that update cost a row write
        and a page more per commit. It is read from the messages once per
        room (an index lookup), again whenever another process has written
        to the file (``PRAGMA data_version``, checked under the write lock),
        and the rooms' ``last_seq`` values are computed the same way when
        rooms are read.
        """
        raised: dict[int, int] = {}
        for room_id, count in counts.items():
            last = self._last_seq.get(room_id)
            if last is None:
                row = conn.execute(
                    f"SELECT COALESCE(({_LAST_SEQ}), 0) FROM rooms WHERE id = ?", (room_id,)
                ).fetchone()
                if row is None:
                    continue  # no such room: the plan refuses the batch
                last = row[0]
            raised[room_id] = last + count
        return raised

    @staticmethod
    def _insert_run(conn: sqlite3.Connection, run: rules.InsertRun) -> list[Result]:
        """Insert a run of messages with multi-row ``INSERT`` statements.

        Measured on 32 rows, one statement costs two thirds of
        ``executemany`` over the same rows (one statement step, one
        ``sqlite_sequence`` update). Chunks have power-of-two sizes up to 64
        rows, so at most seven statement texts reach the statement cache.

        Their ids are consecutive: this connection is the only writer, inside
        one transaction, and AUTOINCREMENT hands out max + 1 for each row.
        """
        rows = run.rows
        if not rows:
            return run.results([])
        start = 0
        while start < len(rows):
            size = _chunk_size(len(rows) - start)
            chunk = rows[start : start + size]
            conn.execute(_multi_insert(size), [value for row in chunk for value in row])
            start += size
        last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        return run.results(range(last - len(rows) + 1, last + 1))

    @staticmethod
    def _apply(conn: sqlite3.Connection, plan: rules.InsertPlan, op: Operation) -> Result:
        if isinstance(op, CallRecord):
            conn.execute(
                f"INSERT INTO calls ({rules.CALL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET answered_at = excluded.answered_at, "
                "ended_at = excluded.ended_at, end_reason = excluded.end_reason",
                rules.call_values(op),
            )
            return Result(Outcome.DONE)
        if isinstance(op, ProbeWrite):
            conn.execute(rules.PROBE_WRITE.format(placeholder="?"), (op.written_at,))
            return Result(Outcome.DONE)
        if isinstance(op, InsertMessage):  # pragma: no cover - inserts come in runs
            raise TypeError("inserts are applied by _insert_run")
        found = conn.execute(
            "SELECT room_id, user_id FROM messages WHERE id = ? AND deleted_at IS NULL",
            (op.message_id,),
        ).fetchone()
        if (refused := rules.refuse_change(op, found)) is not None:
            return refused
        done = Result(Outcome.DONE, room_id=found[0], message_id=op.message_id)
        if isinstance(op, ToggleReaction):
            removed = conn.execute(
                "DELETE FROM reactions WHERE message_id = ? AND user_id = ? AND emoji = ?",
                (op.message_id, op.user_id, op.emoji),
            ).rowcount
            if removed:
                return done
            conn.execute(
                "INSERT INTO reactions (message_id, user_id, emoji, created_at) "
                "VALUES (?, ?, ?, ?)",
                (op.message_id, op.user_id, op.emoji, op.created_at),
            )
            return Result(Outcome.DONE, room_id=found[0], message_id=op.message_id, added=True)
        if isinstance(op, EditMessage):
            conn.execute(
                "UPDATE messages SET content = ?, edited_at = ? WHERE id = ?",
                (op.content, op.edited_at, op.message_id),
            )
            plan.edited(op.message_id, op.content)
        elif isinstance(op, DeleteMessage):
            # The content is erased, not hidden: a deleted message keeps only its id.
            conn.execute(
                "UPDATE messages SET content = NULL, deleted_at = ? WHERE id = ?",
                (op.deleted_at, op.message_id),
            )
            conn.execute("DELETE FROM reactions WHERE message_id = ?", (op.message_id,))
            plan.deleted(op.message_id)
        return done

    # -- rooms ------------------------------------------------------------------------

    @staticmethod
    def _room(conn: sqlite3.Connection, room_id: int) -> Room | None:
        row = conn.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE id = ?", (room_id,)).fetchone()
        if row is None:
            return None
        members = conn.execute(
            "SELECT room_id, user_id FROM room_members WHERE room_id = ? ORDER BY user_id",
            (room_id,),
        )
        return rules.rooms([row], members)[0]

    async def get_room(self, room_id: int) -> Room | None:
        return await self._on_reader(lambda: self._room(self._r(), room_id))

    async def ensure_room(
        self, room_id: int, created_by: str, now: int, max_rooms: int | None = None
    ) -> Room:
        def ensure() -> Room:
            conn = self._w()
            conn.execute("BEGIN IMMEDIATE")
            try:
                created = conn.execute(
                    "INSERT INTO rooms (id, name, private, created_by, created_at) "
                    "VALUES (?, ?, 0, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING id",
                    (room_id, f"Room {room_id}", created_by, now),
                ).fetchall()
                if created and not self._count_created(conn, created_by, max_rooms):
                    raise RoomLimitReached(created_by, rules.creation_limit(max_rooms))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            room = self._room(conn, room_id)
            assert room is not None
            return room

        return await self._on_writer(ensure)

    async def create_room(
        self,
        name: str,
        private: bool,
        members: tuple[str, ...],
        created_by: str | None,
        now: int,
        max_rooms: int | None = None,
    ) -> Room:
        def create() -> Room:
            conn = self._w()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if created_by is not None and not self._count_created(conn, created_by, max_rooms):
                    raise RoomLimitReached(created_by, rules.creation_limit(max_rooms))
                # Numbered here, not by SQLite: past the largest id its rowid
                # would be random (and beyond what a browser can hold).
                room_id = rules.room_number(conn.execute(rules.TAKE_ROOM_NUMBER).fetchone()[0])
                insert = (
                    "INSERT INTO rooms (id, name, private, created_by, created_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING id"
                )
                values = (name, int(private), created_by, now)
                if not conn.execute(insert, (room_id, *values)).fetchall():
                    # Taken by a room open mode created: step over the run of them.
                    free = conn.execute(rules.FREE_ROOM_ID_FROM.format("?"), (room_id,))
                    room_id = rules.room_number(free.fetchone()[0])
                    conn.execute(rules.SET_ROOM_NUMBER.format("?"), (room_id + 1,))
                    conn.execute(insert, (room_id, *values))
                conn.executemany(
                    "INSERT OR IGNORE INTO room_members (room_id, user_id) VALUES (?, ?)",
                    [(room_id, member) for member in members],
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            room = self._room(conn, room_id)
            assert room is not None
            return room

        return await self._on_writer(create)

    @staticmethod
    def _count_created(conn: sqlite3.Connection, user_id: str, max_rooms: int | None) -> bool:
        """Count a room the user creates in this transaction; False past ``max_rooms``."""
        counted = conn.execute(
            rules.COUNT_CREATED_ROOM.format("?", "?"), (user_id, rules.creation_limit(max_rooms))
        ).fetchall()
        return bool(counted)

    async def list_rooms(
        self,
        user_id: str | None,
        after: int = 0,
        limit: int = 100,
        name_contains: str | None = None,
        members_limit: int = 20,
    ) -> list[Room]:
        def read() -> list[Room]:
            conn = self._r()
            # lower() folds ASCII letters only, as store_rules.name_key does.
            match = "" if name_contains is None else "AND instr(lower(name), ?) > 0 "
            params: list[object] = [user_id, after]
            if name_contains is not None:
                params.append(rules.name_key(name_contains))
            rooms = conn.execute(
                f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE (private = 0 OR id IN "
                "(SELECT room_id FROM room_members WHERE user_id = ?)) AND id > ? "
                f"{match}ORDER BY id LIMIT ?",
                [*params, limit],
            ).fetchall()
            private = [row[0] for row in rooms if row[2]]
            members: list[tuple[int, str]] = []
            if private:
                marks = ",".join("?" * len(private))
                members = conn.execute(
                    "SELECT room_id, user_id FROM (SELECT room_id, user_id, ROW_NUMBER() "
                    "OVER (PARTITION BY room_id ORDER BY user_id) AS n FROM room_members "
                    f"WHERE room_id IN ({marks})) WHERE n <= ? ORDER BY room_id, user_id",
                    [*private, members_limit],
                ).fetchall()
            return rules.rooms(rooms, members)

        return await self._on_reader(read)

    async def list_calls(
        self, user_id: str, limit: int, after: CallsAfter | None = None
    ) -> list[CallRecord]:
        def read() -> list[CallRecord]:
            position = after or CallsAfter(rules.NO_BOUND, "")
            rows = self._r().execute(
                f"SELECT {rules.CALL_COLUMNS} FROM calls "
                f"WHERE {rules.CALLS_AFTER.format('?1', '?2', '?3')} "
                "ORDER BY started_at DESC, id LIMIT ?4",
                (user_id, position.started_at, position.call_id, limit),
            )
            return [rules.call_record(row) for row in rows]

        return await self._on_reader(read)

    # -- messages ---------------------------------------------------------------------

    async def history(self, room_id: int, before: int | None, limit: int) -> list[HistoryMessage]:
        def read() -> list[HistoryMessage]:
            conn = self._r()
            rows = conn.execute(
                f"SELECT {rules.HISTORY_COLUMNS} FROM messages "
                "WHERE room_id = ? AND id < ? AND deleted_at IS NULL ORDER BY id DESC LIMIT ?",
                (room_id, before if before is not None else rules.NO_BOUND, limit),
            ).fetchall()
            reactions: list[tuple[int, str, str]] = []
            if rows:
                marks = ",".join("?" * len(rows))
                reactions = conn.execute(
                    "SELECT message_id, emoji, user_id FROM reactions "
                    f"WHERE message_id IN ({marks}) ORDER BY created_at, user_id",
                    [row[0] for row in rows],
                ).fetchall()
            return rules.history(rows, reactions)

        return await self._on_reader(read)

    async def messages_in_seq_range(
        self, room_id: int, after_seq: int, through_seq: int
    ) -> list[SequencedMessage]:
        def read() -> list[SequencedMessage]:
            rows = self._r().execute(
                f"SELECT {rules.MESSAGE_COLUMNS} FROM messages WHERE room_id = ? "
                "AND seq > ? AND seq <= ? AND deleted_at IS NULL ORDER BY seq",
                (room_id, after_seq, through_seq),
            )
            return [rules.sequenced_message(row) for row in rows]

        return await self._on_reader(read)

    async def messages_since(
        self, room_id: int, since_id: int, through_seq: int | None, limit: int
    ) -> tuple[list[SequencedMessage], bool]:
        def read() -> tuple[list[SequencedMessage], bool]:
            rows = (
                self._r()
                .execute(
                    f"SELECT {rules.MESSAGE_COLUMNS} FROM messages WHERE room_id = ? AND id > ? "
                    "AND seq <= ? AND deleted_at IS NULL ORDER BY id DESC LIMIT ?",
                    (
                        room_id,
                        since_id,
                        through_seq if through_seq is not None else rules.NO_BOUND,
                        limit + 1,
                    ),
                )
                .fetchall()
            )
            return rules.newest_page(rows, limit)

        return await self._on_reader(read)


#: Most rows in one INSERT statement (7 values each, far below SQLite's
#: limit of 32,766 bound values).
_MAX_INSERT_ROWS = 64


def _chunk_size(remaining: int) -> int:
    """The largest power of two that is at most ``remaining`` and ``_MAX_INSERT_ROWS``."""
    return 1 << (min(remaining, _MAX_INSERT_ROWS).bit_length() - 1)


@functools.cache
def _multi_insert(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO messages ({rules.INSERT_COLUMNS}) VALUES {values}"
