"""What SQLite and PostgreSQL spell differently, and nothing else.

Queries are written once with PostgreSQL's numbered placeholders (``$1``,
``$2``, a number may repeat) and rendered by :meth:`Dialect.sql` when a
feature module is built, never per call. Upserts (``ON CONFLICT ... DO
UPDATE`` / ``DO NOTHING``) and ``RETURNING`` are spelled alike by both
engines (SQLite 3.35 and later), so they are not here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class Dialect:
    """One engine's spelling; one instance per engine (:data:`SQLITE`, :data:`POSTGRES`)."""

    name: str
    #: Ends a ``SELECT`` of rows the transaction is about to change.
    row_lock: str = ""
    #: Whether a query may return an array column (a room's members in its row).
    arrays: bool = False
    #: Ends an ``ORDER BY`` of text that must sort by code point, as Python does.
    code_point_order: str = ""
    #: A room's last sequence number, as an expression over a ``rooms`` row.
    room_last_seq: str = "last_seq"

    def sql(self, text: str) -> str:
        """``text`` (with ``$n`` placeholders) as this engine takes it."""
        return text

    def in_list(self, expr: str, first: int, count: int, sqltype: str) -> str:
        """``expr`` is one of ``count`` values bound from placeholder ``first`` on
        (:meth:`list_args` binds them). A list is a query's last parameter."""
        raise NotImplementedError

    def list_args(self, values: Sequence[Any]) -> Sequence[Any]:
        """The parameters of an :meth:`in_list` of ``values``."""
        raise NotImplementedError

    def ascii_lower(self, expr: str) -> str:
        """``expr`` with the 26 ASCII capitals lowered and nothing else changed."""
        raise NotImplementedError

    def contains(self, haystack: str, needle: str) -> str:
        """Whether text ``haystack`` contains ``needle``, compared exactly."""
        raise NotImplementedError

    def insert_lock(self, table: str) -> str | None:
        """A statement taking the lock an ``INSERT`` into ``table`` takes, where
        tables have locks of their own."""
        return None


class SQLiteDialect(Dialect):
    """SQLite: ``?n`` placeholders; one writer, which holds the whole database
    for a write transaction, so rows and tables need no locks."""

    name = "sqlite"
    #: The one writer numbers messages in memory and does not keep
    #: ``rooms.last_seq`` (migration 0005): a room's newest message has it
    #: (seq order is id order in a room, and the (room_id, id) index finds it).
    room_last_seq = (
        "COALESCE((SELECT seq FROM messages WHERE messages.room_id = rooms.id "
        "ORDER BY messages.id DESC LIMIT 1), 0)"
    )

    _PLACEHOLDER = re.compile(r"\$(\d+)")

    def sql(self, text: str) -> str:
        return self._PLACEHOLDER.sub(r"?\1", text)

    def in_list(self, expr: str, first: int, count: int, sqltype: str) -> str:
        marks = ", ".join(f"?{n}" for n in range(first, first + count))
        return f"{expr} IN ({marks})"

    def list_args(self, values: Sequence[Any]) -> Sequence[Any]:
        return values

    def ascii_lower(self, expr: str) -> str:
        return f"lower({expr})"  # folds ASCII letters only

    def contains(self, haystack: str, needle: str) -> str:
        return f"instr({haystack}, {needle}) > 0"


class PostgresDialect(Dialect):
    """PostgreSQL: several processes write at once, so changed rows are locked."""

    name = "postgresql"
    row_lock = " FOR UPDATE"
    arrays = True
    code_point_order = ' COLLATE "C"'

    def in_list(self, expr: str, first: int, count: int, sqltype: str) -> str:
        return f"{expr} = ANY(${first}::{sqltype}[])"

    def list_args(self, values: Sequence[Any]) -> Sequence[Any]:
        return (list(values),)

    def ascii_lower(self, expr: str) -> str:
        # lower() would fold by the database's locale.
        return f"translate({expr}, '{_UPPER}', '{_UPPER.lower()}')"

    def contains(self, haystack: str, needle: str) -> str:
        return f"strpos({haystack}, {needle}) > 0"

    def insert_lock(self, table: str) -> str | None:
        return f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE"


SQLITE = SQLiteDialect()
POSTGRES = PostgresDialect()
