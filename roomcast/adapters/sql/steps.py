"""How the shared SQL reaches a connection without knowing whether it is awaited.

An operation is a generator (:data:`Steps`): it yields each statement and is
sent back that statement's rows, then returns its result. Each engine drives
it with its own connection, ``sqlite3`` in a plain loop, ``asyncpg`` with
``await``, so the logic between the statements is written once. A generator
step costs a fraction of a microsecond, far below the statement it drives.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    PostgresConnection = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")


class Row(Protocol):
    """A ``sqlite3`` tuple or an ``asyncpg`` record: read by column position."""

    def __getitem__(self, index: int, /) -> Any: ...


class Many(NamedTuple):
    """One statement run once per parameter tuple, returning no rows (``executemany``)."""

    sql: str
    args: Sequence[Sequence[Any]]


#: A statement and its parameters; its rows (none for most writes) are sent back.
Statement = tuple[str, Sequence[Any]] | Many

Steps = Generator[Statement, Sequence[Row], T]


def drive_sqlite(conn: sqlite3.Connection, steps: Steps[T]) -> T:
    """Run the steps' statements on ``conn``, in this thread, to their result."""
    try:
        statement = next(steps)
        while True:
            if isinstance(statement, Many):
                conn.executemany(statement.sql, statement.args)
                statement = steps.send(())
            else:
                statement = steps.send(conn.execute(*statement).fetchall())
    except StopIteration as done:
        result: T = done.value
        return result


async def drive_postgres(conn: PostgresConnection, steps: Steps[T]) -> T:
    """Run the steps' statements on ``conn`` to their result."""
    try:
        statement = next(steps)
        while True:
            if isinstance(statement, Many):
                if statement.args:
                    await conn.executemany(statement.sql, statement.args)
                statement = steps.send(())
            else:
                statement = steps.send(await conn.fetch(statement[0], *statement[1]))
    except StopIteration as done:
        result: T = done.value
        return result
