"""Search: the index of every live message's search document, and the
queries that find messages in it.

Documents and needles are :mod:`roomcast.core.search`'s; each engine finds
the documents that contain every needle with its own trigram index: SQLite's
FTS5 table with the ``trigram`` tokenizer (``message_search MATCH '"a" AND
"b"'``), PostgreSQL's ``pg_trgm`` GIN index (``doc LIKE '%a%' AND doc LIKE
'%b%'``). Both are exact substring tests, so the engines find the same rows.

The index changes in the transaction of the message it follows: a new
message is findable once its ``chat`` is broadcast, an edit is found by its
new text and no longer by its old one, a deleted message not at all. Who may
read a room is checked in the query, against the memberships and bans as they
are when it runs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from roomcast.adapters.sql.dialect import Dialect
from roomcast.adapters.sql.steps import Row, Steps
from roomcast.core.search import Query, SearchFilters, Tier, document

#: Most messages one statement of the index's inserts carries.
_MAX_ROWS = 64
#: Messages read at a time when a migration indexes an existing database.
BACKFILL_CHUNK = 5000


class _Spelling:
    """How one engine keeps and matches documents."""

    key: str  # the index's message id column

    def insert(self, count: int) -> str:
        """A statement indexing ``count`` messages, bound by :meth:`pairs`."""
        raise NotImplementedError

    def pairs(self, rows: Sequence[tuple[int, str]]) -> Sequence[object]:
        raise NotImplementedError

    def match(self, query: Query, tier: str, args: list[object]) -> str:
        """The condition of the tier's hits, binding its values onto ``args``."""
        raise NotImplementedError


def _phrases(needles: Sequence[str]) -> str:
    # Needles hold letters, digits and spaces only, never a quote.
    return " AND ".join(f'"{needle}"' for needle in needles)


class _SQLiteSpelling(_Spelling):
    key = "s.rowid"

    @functools.cache  # noqa: B019 (one instance, a few sizes)
    def insert(self, count: int) -> str:
        marks = ", ".join(f"(?{2 * i + 1}, ?{2 * i + 2})" for i in range(count))
        return f"INSERT INTO message_search (rowid, doc) VALUES {marks}"

    def pairs(self, rows: Sequence[tuple[int, str]]) -> Sequence[object]:
        return [value for row in rows for value in row]

    def match(self, query: Query, tier: str, args: list[object]) -> str:
        # FTS5 takes one MATCH per table: the tier is part of its expression.
        expression = _phrases(query.substring_needles)
        if tier == Tier.WORDS:
            expression = f"({expression}) AND ({_phrases(query.word_needles)})"
        elif tier == Tier.SUBSTRINGS:
            expression = f"({expression}) NOT ({_phrases(query.word_needles)})"
        args.append(expression)
        return f"message_search MATCH ${len(args)}"


class _PostgresSpelling(_Spelling):
    key = "s.message_id"

    def insert(self, count: int) -> str:
        return (
            "INSERT INTO message_search (message_id, doc) "
            "SELECT * FROM unnest($1::bigint[], $2::text[])"
        )

    def pairs(self, rows: Sequence[tuple[int, str]]) -> Sequence[object]:
        return [[row[0] for row in rows], [row[1] for row in rows]]

    def match(self, query: Query, tier: str, args: list[object]) -> str:
        def contains(needles: Sequence[str]) -> str:
            # No LIKE wildcards in needles: ``%``, ``_`` and ``\`` separate tokens.
            tests = []
            for needle in needles:
                args.append(f"%{needle}%")
                tests.append(f"s.doc LIKE ${len(args)}")
            return " AND ".join(tests)

        condition = contains(query.substring_needles)
        if tier == Tier.WORDS:
            condition += " AND " + contains(query.word_needles)
        elif tier == Tier.SUBSTRINGS:
            condition += f" AND NOT ({contains(query.word_needles)})"
        return condition


_SPELLINGS: dict[str, _Spelling] = {"sqlite": _SQLiteSpelling(), "postgresql": _PostgresSpelling()}


class SearchSQL:
    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._spelling = _SPELLINGS[dialect.name]
        key = self._spelling.key.removeprefix("s.")
        self._unindex = dialect.sql(f"DELETE FROM message_search WHERE {key} = $1")

    # -- keeping the index (inside the message's transaction) --------------------------

    def index(self, messages: Iterable[tuple[int, str]]) -> Steps[None]:
        """Index new messages, ``(id, content)``."""
        rows = [(message_id, doc) for message_id, content in messages if (doc := document(content))]
        spelling = self._spelling
        for start in range(0, len(rows), _MAX_ROWS):
            chunk = rows[start : start + _MAX_ROWS]
            yield (spelling.insert(len(chunk)), spelling.pairs(chunk))

    def reindex(self, message_id: int, content: str) -> Steps[None]:
        """An edited message: found by its new text only."""
        yield (self._unindex, (message_id,))
        yield from self.index([(message_id, content)])

    def unindex(self, message_id: int) -> Steps[None]:
        yield (self._unindex, (message_id,))

    # -- finding ------------------------------------------------------------------------

    def find(
        self,
        viewer: str,
        query: Query,
        filters: SearchFilters,
        tier: str,
        below: int | None,
        limit: int,
        columns: str,
    ) -> Steps[Sequence[Row]]:
        """Up to ``limit`` hits (rows of ``columns`` over messages ``m``, then the
        document), newest first, with ids below ``below``."""
        sql, args = self._statement(viewer, query, filters, tier, below, columns)
        rows = yield (sql + f" ORDER BY {self._spelling.key} DESC LIMIT {int(limit)}", args)
        return rows

    def count(self, viewer: str, query: Query, filters: SearchFilters, cap: int) -> Steps[int]:
        """How many messages match, counted up to ``cap``."""
        sql, args = self._statement(viewer, query, filters, Tier.ALL, None, "1")
        rows = yield (f"SELECT count(*) FROM ({sql} LIMIT {int(cap)}) AS hits", args)
        return int(rows[0][0])

    def _statement(
        self,
        viewer: str,
        query: Query,
        filters: SearchFilters,
        tier: str,
        below: int | None,
        columns: str,
    ) -> tuple[str, list[object]]:
        spelling = self._spelling
        args: list[object] = [viewer]
        conditions = [spelling.match(query, tier, args)]

        def bound(test: str, value: object) -> None:
            args.append(value)
            conditions.append(test.format(f"${len(args)}"))

        if below is not None:
            bound(f"{spelling.key} < {{}}", below)
        if filters.room_id is not None:
            bound("m.room_id = {}", filters.room_id)
        if filters.room_name is not None:
            lowered = self._dialect.ascii_lower("name")
            bound(f"m.room_id IN (SELECT id FROM rooms WHERE {lowered} = {{}})", filters.room_name)
        if filters.from_user is not None:
            bound("m.user_id = {}", filters.from_user)
        if filters.thread_id is not None:
            args.append(filters.thread_id)
            conditions.append(f"(m.thread_id = ${len(args)} OR m.id = ${len(args)})")
        if filters.before is not None:
            bound("m.created_at < {}", filters.before)
        if filters.after is not None:
            bound("m.created_at > {}", filters.after)
        # The rooms the viewer may read now: theirs, and public ones that are
        # open (not archived) and have not banned them.
        readable = (
            "m.room_id IN (SELECT r.id FROM rooms r WHERE EXISTS (SELECT 1 FROM room_members rm "
            "WHERE rm.room_id = r.id AND rm.user_id = $1) OR (r.private = 0 AND "
            "r.archived_at IS NULL AND NOT EXISTS (SELECT 1 FROM room_bans b "
            "WHERE b.room_id = r.id AND b.user_id = $1)))"
        )
        sql = (
            f"SELECT {columns} FROM message_search s JOIN messages m ON m.id = {spelling.key} "
            f"WHERE {' AND '.join(conditions)} AND m.deleted_at IS NULL AND {readable}"
        )
        return self._dialect.sql(sql), args


# -- indexing a database that had no index (migration) ---------------------------------

_EXISTING = (
    "SELECT id, content FROM messages WHERE id > $1 AND deleted_at IS NULL "
    "AND content IS NOT NULL ORDER BY id LIMIT $2"
)


def backfill(dialect: Dialect, last: int) -> Steps[int]:
    """Index up to :data:`BACKFILL_CHUNK` existing messages with ids above
    ``last``; returns the last id read (``last`` when there were none)."""
    rows = yield (dialect.sql(_EXISTING), (last, BACKFILL_CHUNK))
    if not rows:
        return last
    yield from SearchSQL(dialect).index((row[0], row[1]) for row in rows)
    return int(rows[-1][0])
