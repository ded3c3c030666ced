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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from roomcast.adapters import migrations
from roomcast.adapters.sql.dialect import SQLITE
from roomcast.adapters.sql.messages import INSERT_COLUMNS, MESSAGE_COLUMNS, PLAIN_INSERT_COLUMNS
from roomcast.adapters.sql.rules import InsertPlan, InsertRun, client_ids
from roomcast.adapters.sql.search import register_sqlite_functions
from roomcast.adapters.sql.steps import Steps, drive_sqlite
from roomcast.adapters.sql.store import SQLStore
from roomcast.adapters.sqlite_search import SearchIndexFile, index_thread_started
from roomcast.adapters.sqlite_wal import WalCheckpointer, run_on
from roomcast.config import sqlite_path
from roomcast.ports.store import InsertMessage, Operation, Result, StoreUnavailable

__all__ = ["SQLiteStore", "sqlite_path"]

logger = logging.getLogger("roomcast.store")

T = TypeVar("T")

#: The messages stored under one client id (one index lookup per id, fewer
#: statements than a join would save).
_STORED = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE user_id = ? AND client_msg_id = ?"
_LAST_SEQ = f"SELECT {SQLITE.room_last_seq} FROM rooms WHERE id = ?"
_LAST_ROWID = "SELECT last_insert_rowid()"


class SQLiteStore(SQLStore):
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
        super().__init__(SQLITE, max_batch, on_commit, linger)
        self.path = sqlite_path(url)
        self._timeout_ms = int(timeout * 1000)
        self._clock_ms = clock_ms
        self._reader_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._index_thread = ThreadPoolExecutor(
            1, thread_name_prefix="sqlite-search", initializer=index_thread_started
        )
        self._index = SearchIndexFile(self.path, lambda path: self._connect(path=path))
        self._writer: sqlite3.Connection | None = None
        self._wal = WalCheckpointer(self.path, max_wal_bytes, self._connect)
        # Each room's last sequence number, as committed (see _numbering), and
        # the file's data_version when it was last known right.
        self._last_seq: dict[int, int] = {}
        self._data_version = -1
        self._reader: sqlite3.Connection | None = None
        # Deferred search indexing (SearchSQL): messages committed since the
        # last pass, the pass running, and the timer that starts the next one.
        self._unindexed = 0
        self._index_task: asyncio.Task[None] | None = None
        self._index_timer: asyncio.TimerHandle | None = None
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc
        self._writer = await self._on_writer(self._open_writer)
        await run_on(self._index_thread, self._index.open)
        self._reader = await self._on_reader(self._open_reader)
        await self._wal.start()
        self._committer.start()
        self._start_indexing()  # what an earlier run left to index

    def _connect(
        self, busy_timeout_ms: int | None = None, path: str | None = None
    ) -> sqlite3.Connection:
        # isolation_level=None: transactions are opened explicitly below.
        conn = sqlite3.connect(path or self.path, isolation_level=None, check_same_thread=False)
        timeout = self._timeout_ms if busy_timeout_ms is None else busy_timeout_ms
        conn.execute(f"PRAGMA busy_timeout = {timeout}")
        conn.execute("PRAGMA foreign_keys = ON")
        register_sqlite_functions(conn)
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        self._index.attach(conn)
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
        self._closing = True
        if self._index_timer is not None:
            self._index_timer.cancel()
        await self._committer.close()
        if self._index_task is not None:
            await self._index_task
        await self._wal.close()
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._writer.close()
        if self._reader is not None:
            await loop.run_in_executor(self._reader_thread, self._reader.close)
        self._reader_thread.shutdown(wait=True)
        await loop.run_in_executor(self._index_thread, self._index.close)
        self._index_thread.shutdown(wait=True)
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

    async def _read(self, steps: Callable[[], Steps[T]], plan_each_call: bool = False) -> T:
        # (plan_each_call: measured fine without; SQLite keeps no generic plans.)
        return await self._on_reader(lambda: drive_sqlite(self._r(), steps()))

    async def _write(self, steps: Callable[[], Steps[T]]) -> T:
        return await self._on_writer(
            lambda: self._in_transaction(lambda conn: drive_sqlite(conn, steps()))
        )

    def _in_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._w()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    # -- group-committed writes -----------------------------------------------------

    async def _execute_batch(self, ops: Sequence[Operation]) -> list[Result]:
        return await self._on_writer(lambda: self._transaction(ops))

    def _transaction(self, ops: Sequence[Operation]) -> list[Result]:
        def work(conn: sqlite3.Connection) -> tuple[list[Result], dict[int, int]]:
            # Another process wrote to the file since this one last committed:
            # its room numbers may have moved on, so count them again.
            data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            if data_version != self._data_version:
                self._last_seq.clear()
                self._data_version = data_version
            stored = [row for key in client_ids(ops) for row in conn.execute(_STORED, key)]
            plan = InsertPlan(ops, stored)
            last_seqs = self._numbering(conn, plan.counts)
            plan.begin(last_seqs)
            return drive_sqlite(conn, self._batch(plan, ops)), last_seqs

        results, last_seqs = self._in_transaction(work)
        self._last_seq.update(last_seqs)
        inserted = sum(1 for op in ops if isinstance(op, InsertMessage))
        if inserted:
            self._index_later(inserted)
        return results

    # -- deferred search indexing ---------------------------------------------------

    def _index_later(self, inserted: int) -> None:
        """New messages were committed: index them within :data:`INDEX_DELAY`,
        or at once when a chunk's worth waits."""
        self._unindexed += inserted
        if self._index_task is not None:
            return  # the pass running takes them (or starts the next one)
        if self._unindexed >= INDEX_CHUNK:
            self._start_indexing()
        elif self._index_timer is None:
            loop = asyncio.get_running_loop()
            self._index_timer = loop.call_later(INDEX_DELAY, self._start_indexing)

    def _start_indexing(self) -> None:
        if self._index_timer is not None:
            self._index_timer.cancel()
            self._index_timer = None
        if self._index_task is None and not self._closing:
            self._index_task = asyncio.get_running_loop().create_task(self._index_pass())

    async def _index_pass(self) -> None:
        try:
            while True:
                self._unindexed = 0
                if await self.catch_up_search() < INDEX_CHUNK:
                    break
                await asyncio.sleep(0)  # one chunk per loop turn: deliveries go on
        except StoreUnavailable as exc:
            # Left for later: searches read unindexed messages meanwhile.
            logger.warning("search indexing failed error=%r", exc)
            self._unindexed = max(self._unindexed, 1)
        finally:
            self._index_task = None
        if self._unindexed and not self._closing:
            self._index_later(0)

    async def catch_up_search(self) -> int:
        """Index up to :data:`INDEX_CHUNK` messages past the search index's end;
        how many it read."""
        return await run_on(self._index_thread, lambda: self._index.catch_up(INDEX_CHUNK))

    def _numbering(self, conn: sqlite3.Connection, counts: Mapping[int, int]) -> dict[int, int]:
        """Each room's last sequence number after this batch's inserts.

        A room's last number is remembered here instead of being written to
        ``rooms.last_seq`` in every transaction: that update cost a row write
        and a page more per commit. It is read from the messages once per
        room (an index lookup), again whenever another process has written
        to the file (``PRAGMA data_version``, checked under the write lock),
        and the rooms' ``last_seq`` values are computed the same way when
        rooms are read (``SQLITE.room_last_seq``).
        """
        raised: dict[int, int] = {}
        for room_id, count in counts.items():
            last = self._last_seq.get(room_id)
            if last is None:
                row = conn.execute(_LAST_SEQ, (room_id,)).fetchone()
                if row is None:
                    continue  # no such room: the plan refuses the batch
                last = row[0]
            raised[room_id] = last + count
        return raised

    def _insert_run(self, run: InsertRun) -> Steps[list[Result]]:
        """Insert a run of messages with multi-row ``INSERT`` statements.

        Measured on 32 rows, one statement costs two thirds of
        ``executemany`` over the same rows (one statement step, one
        ``sqlite_sequence`` update). Chunks have power-of-two sizes up to 64
        rows, so at most fourteen statement texts (plain runs and others) reach the
        statement cache.

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
            yield (_multi_insert(size, run.plain), [value for row in chunk for value in row])
            start += size
        last = (yield (_LAST_ROWID, ()))[0][0]
        return run.results(range(last - len(rows) + 1, last + 1))


#: Messages one search indexing transaction takes (on the index's own thread
#: and file: larger ones spread FTS5's cost per commit thinner), and how long
#: a new message waits for one at most.
INDEX_CHUNK = 2048
INDEX_DELAY = 0.2

#: Most rows in one INSERT statement (7 or 9 values each, far below SQLite's
#: limit of 32,766 bound values).
_MAX_INSERT_ROWS = 64


def _chunk_size(remaining: int) -> int:
    """The largest power of two that is at most ``remaining`` and ``_MAX_INSERT_ROWS``."""
    return 1 << (min(remaining, _MAX_INSERT_ROWS).bit_length() - 1)


@functools.cache
def _multi_insert(rows: int, plain: bool) -> str:
    columns = PLAIN_INSERT_COLUMNS if plain else INSERT_COLUMNS
    marks = "(" + ", ".join(["?"] * (columns.count(",") + 1)) + ")"
    return f"INSERT INTO messages ({columns}) VALUES {', '.join([marks] * rows)}"
