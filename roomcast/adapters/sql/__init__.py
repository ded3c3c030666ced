"""The stores' SQL, written once for SQLite and PostgreSQL.

Each feature module (:mod:`.messages`, :mod:`.rooms`, :mod:`.calls`,
:mod:`.health`) writes its queries once, in PostgreSQL's ``$1`` spelling, and
renders them through a :class:`~.dialect.Dialect` when it is built. Its
operations are :data:`~.steps.Steps`: generators that yield statements and
receive their rows, so the same logic runs on ``sqlite3`` (synchronously, on
the writer or the reader thread) and on ``asyncpg`` (awaited). The engine
modules keep only what differs in how a database is reached.
"""
