"""SQLite's search index: a file of its own beside the database.

FTS5 work was most of a message's cost when it shared the database's
transactions, and any transaction on the database's one writer holds up the
messages behind it. So the index is kept in ``<database>-search``, by a
connection of its own on a thread of its own, which reads the messages
(the database attached as ``chat``, a read that never waits for the
writer) and writes only its own file, in transactions large enough that
FTS5's cost per commit spreads thin. The database's readers attach the file
to search it (:meth:`SearchIndexFile.attach`); what the index does not hold
yet, they match themselves (:class:`~roomcast.adapters.sql.search.SearchSQL`).

The file is derived data: one that is missing, was made for another
database (the key in ``search_index_key`` differs) or by another version of
the documents (:data:`DOCUMENTS_VERSION`) is built again from the messages.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable

from roomcast.adapters.sql.dialect import SQLITE
from roomcast.adapters.sql.search import SearchSQL
from roomcast.adapters.sql.steps import drive_sqlite
from roomcast.core.search import document

__all__ = ["DOCUMENTS_VERSION", "SearchIndexFile", "index_thread_started"]

#: What :func:`roomcast.core.search.document` makes: a change to it changes
#: this, and every index file is built again.
DOCUMENTS_VERSION = 1

#: Documents made between two chances for the event loop to run (a few
#: hundred microseconds of Python holding the GIL).
_DOCUMENTS_AT_ONCE = 128

_SCHEMA = (
    # case_sensitive 1: documents are folded already, and FTS5 must not fold
    # them another way than PostgreSQL. detail=none: no positions (the hits
    # are tested against their text), so the index is a fraction of the size
    # and its merges stay small; columnsize=0: nothing ranks by length;
    # content='': trigrams only, no copy of the document.
    "CREATE VIRTUAL TABLE message_search USING fts5 (doc, "
    "tokenize = 'trigram case_sensitive 1', detail = none, columnsize = 0, content = '')",
    "CREATE TABLE search_state (documents_version INTEGER NOT NULL, database_key TEXT NOT NULL, "
    "indexed_through INTEGER NOT NULL, edits_through INTEGER NOT NULL)",
)

#: FTS5 merges 16 segments at a time, not 4: a merge rewrites what it
#: merges, so fewer, wider merges take the cost per message from about 2.8 to
#: 1.8 µs (queries read a few more segments). A setting the file keeps.
_AUTOMERGE = "INSERT INTO main.message_search (message_search, rank) VALUES ('automerge', 16)"


def index_thread_started() -> None:
    """The index thread's initializer: on Linux, where each thread has its own
    nice value, the index yields the core to the event loop's thread (a
    message's delivery) whenever both want it, and takes the idle time."""
    if sys.platform == "linux":
        # Where it is not allowed: the same work, at the same priority.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class SearchIndexFile:
    """The index file of the database at ``database``; its methods run on the
    index's thread, except :meth:`attach` (on the connection's own)."""

    def __init__(self, database: str, connect: Callable[[str], sqlite3.Connection]) -> None:
        self.database = database
        self.path = f"{database}-search"
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._search = SearchSQL(SQLITE)

    def open(self) -> None:
        """Connect, and build the file afresh when it is not this database's."""
        conn = self._connect(self.path)
        conn.execute("PRAGMA journal_mode = WAL")
        # Derived data: a crash may lose its last transactions, never the
        # database's, and the index is rebuilt or caught up from the messages.
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("ATTACH DATABASE ? AS chat", (self.database,))
        self._conn = conn
        key = conn.execute("SELECT key FROM chat.search_index_key").fetchone()[0]
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._state() != (DOCUMENTS_VERSION, key):
                self._rebuild(conn, key)
            conn.execute(_AUTOMERGE)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _state(self) -> tuple[int, str] | None:
        assert self._conn is not None
        try:
            row = self._conn.execute(
                "SELECT documents_version, database_key FROM main.search_state"
            ).fetchone()
        except sqlite3.OperationalError:
            return None  # a new file
        return (int(row[0]), str(row[1])) if row else None

    @staticmethod
    def _rebuild(conn: sqlite3.Connection, key: str) -> None:
        conn.execute("DROP TABLE IF EXISTS main.message_search")
        conn.execute("DROP TABLE IF EXISTS main.search_state")
        for statement in _SCHEMA:
            conn.execute(statement)
        # Every message is read afresh, with its text as it is now: the
        # edits made so far are in it.
        edits = conn.execute("SELECT coalesce(max(seq), 0) FROM chat.search_edits").fetchone()[0]
        conn.execute(
            "INSERT INTO main.search_state VALUES (?, ?, 0, ?)", (DOCUMENTS_VERSION, key, edits)
        )

    def catch_up(self, chunk: int) -> int:
        """Index up to ``chunk`` messages (and edits) the index lacks; how many
        it read (fewer than ``chunk``: caught up)."""
        conn = self._conn
        if conn is None:
            raise sqlite3.OperationalError("the search index is closed")
        # Read outside a transaction: no snapshot of the database is held
        # while the documents are made and written (it would keep its
        # checkpoints from finishing).
        work = drive_sqlite(conn, self._search.pending(chunk))
        if not work.read:
            return 0
        documents: list[tuple[int, str]] = []
        for start in range(0, len(work.texts), _DOCUMENTS_AT_ONCE):
            if start:
                time.sleep(0)  # let the event loop's thread take the GIL
            documents += [
                (message_id, document(text))
                for message_id, text in work.texts[start : start + _DOCUMENTS_AT_ONCE]
            ]
        # Deferred, not IMMEDIATE: IMMEDIATE would take the database's write
        # lock too. Only this file is written.
        conn.execute("BEGIN")
        try:
            added = drive_sqlite(conn, self._search.add(work, documents))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return work.read if added else chunk  # moved by another indexer: read again

    def attach(self, conn: sqlite3.Connection) -> None:
        """Make the index searchable on a connection to the database."""
        conn.execute("ATTACH DATABASE ? AS search", (self.path,))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
