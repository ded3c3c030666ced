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
from typing import Any, cast

from roomcast.adapters.sql.dialect import Dialect
from roomcast.adapters.sql.steps import Row, Steps
from roomcast.core.search import Query, SearchFilters, Tier, document, in_tier

#: Most messages one statement of the index's inserts carries.
_MAX_ROWS = 64
#: Messages read at a time when a migration indexes an existing database.
BACKFILL_CHUNK = 5000


class _Spelling:
    """How one engine keeps and matches documents."""

    key: str  # the index's message id column
    #: Whether new messages are indexed after their commit (see SearchSQL).
    deferred: bool = False

    def insert(self, count: int) -> str:
        """A statement indexing ``count`` messages, bound by :meth:`pairs`."""
        raise NotImplementedError

    def pairs(self, rows: Sequence[tuple[int, str]]) -> Sequence[object]:
        raise NotImplementedError

    def candidates(self, query: Query, args: list[object]) -> str | None:
        """A condition the index answers that every hit meets, or None."""
        return None

    def contains(self, placeholder: str) -> str:
        """Whether the document holds the needle bound at ``placeholder``."""
        raise NotImplementedError

    def needle_arg(self, needle: str) -> str:
        return needle

    def match(self, query: Query, tier: str, args: list[object]) -> str:
        """The condition of the tier's hits, binding its values onto ``args``."""

        def contains_all(needles: Sequence[str]) -> str:
            tests = []
            for needle in needles:
                args.append(self.needle_arg(needle))
                tests.append(self.contains(f"${len(args)}"))
            return " AND ".join(tests)

        found = self.candidates(query, args)
        condition = contains_all(query.substring_needles)
        if found is not None:
            condition = f"{found} AND {condition}"
        if tier == Tier.WORDS:
            condition += " AND " + contains_all(query.word_needles)
        elif tier == Tier.SUBSTRINGS:
            condition += f" AND NOT ({contains_all(query.word_needles)})"
        return condition


class _SQLiteSpelling(_Spelling):
    key = "s.rowid"
    deferred = True

    @functools.cache  # noqa: B019 (one instance, a few sizes)
    def insert(self, count: int) -> str:
        marks = ", ".join(f"(?{2 * i + 1}, ?{2 * i + 2})" for i in range(count))
        return f"INSERT INTO message_search (rowid, doc) VALUES {marks}"

    def pairs(self, rows: Sequence[tuple[int, str]]) -> Sequence[object]:
        return [value for row in rows for value in row]

    def candidates(self, query: Query, args: list[object]) -> str:
        # The index keeps no positions (detail=none: a fraction of the size,
        # and small merges): it finds the documents that hold every trigram
        # of the needles, and instr() keeps those that hold the needles.
        trigrams = {n[i : i + 3] for n in query.substring_needles for i in range(len(n) - 2)}
        args.append(" AND ".join(f'"{t}"' for t in sorted(trigrams)))
        return f"message_search MATCH ${len(args)}"

    def contains(self, placeholder: str) -> str:
        return f"instr(s.doc, {placeholder}) > 0"


class _PostgresSpelling(_Spelling):
    key = "s.message_id"

    def insert(self, count: int) -> str:
        return (
            "INSERT INTO message_search (message_id, doc) "
            "SELECT * FROM unnest($1::bigint[], $2::text[])"
        )

    def pairs(self, rows: Sequence[tuple[int, str]]) -> Sequence[object]:
        return [[row[0] for row in rows], [row[1] for row in rows]]

    def contains(self, placeholder: str) -> str:
        return f"s.doc LIKE {placeholder}"  # what the trigram index serves

    def needle_arg(self, needle: str) -> str:
        return f"%{needle}%"


_SPELLINGS: dict[str, _Spelling] = {"sqlite": _SQLiteSpelling(), "postgresql": _PostgresSpelling()}


class SearchSQL:
    """The index and its queries.

    On PostgreSQL a new message's document is written in the message's own
    transaction. On SQLite that cost too much on the hot path (measured: FTS5
    work per commit is most of it, so small commits pay the most), so new
    messages are indexed after their commit, by :meth:`catch_up` in
    transactions of their own, and ``search_state.indexed_through`` says how far
    the index goes. SQLite has one writer, so ids commit in order: every
    message up to that id is indexed, every later one is not, and a search
    reads the later ones (a fraction of a second of messages) from the
    messages table and matches their documents itself: what it finds is the
    same either way, at once. Edits and deletes change the index in their own
    transaction, for a message the index holds.
    """

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._spelling = _SPELLINGS[dialect.name]
        self.deferred = self._spelling.deferred
        key = self._spelling.key.removeprefix("s.")
        self._unindex = dialect.sql(f"DELETE FROM message_search WHERE {key} = $1")
        self._watermark = "SELECT indexed_through FROM search_state"
        self._indexed_edit = dialect.sql(
            "INSERT INTO message_search (rowid, doc) SELECT $1, $2 "
            "WHERE $1 <= (SELECT indexed_through FROM search_state)"
        )
        # Deleted ones too: the mark moves past them.
        self._unindexed = dialect.sql(
            "SELECT id, content FROM messages WHERE id > $1 ORDER BY id LIMIT $2"
        )
        self._set_watermark = dialect.sql("UPDATE search_state SET indexed_through = $1")

    # -- keeping the index --------------------------------------------------------------

    def index(self, messages: Iterable[tuple[int, str]]) -> Steps[None]:
        """New messages, ``(id, content)``, in their transaction (when not deferred)."""
        if self.deferred:
            return
        yield from self._insert(messages)

    def _insert(self, messages: Iterable[tuple[int, str]]) -> Steps[None]:
        rows = [(message_id, doc) for message_id, content in messages if (doc := document(content))]
        spelling = self._spelling
        for start in range(0, len(rows), _MAX_ROWS):
            chunk = rows[start : start + _MAX_ROWS]
            yield (spelling.insert(len(chunk)), spelling.pairs(chunk))

    def reindex(self, message_id: int, content: str) -> Steps[None]:
        """An edited message: found by its new text only."""
        yield (self._unindex, (message_id,))
        if not self.deferred:
            yield from self._insert([(message_id, content)])
        elif doc := document(content):
            yield (self._indexed_edit, (message_id, doc))  # the index holds it already

    def unindex(self, message_id: int) -> Steps[None]:
        yield (self._unindex, (message_id,))

    def catch_up(self, chunk: int) -> Steps[int]:
        """Index up to ``chunk`` messages past the index's end (deferred
        indexing); returns how many it read (fewer than ``chunk``: caught up)."""
        mark = (yield (self._watermark, ()))[0][0]
        rows = yield (self._unindexed, (mark, chunk))
        if rows:
            yield from self._insert((row[0], row[1]) for row in rows if row[1] is not None)
            yield (self._set_watermark, (rows[-1][0],))
        return len(rows)

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
    ) -> Steps[list[Row]]:
        """Up to ``limit`` hits (rows of ``columns`` over messages ``m``, then the
        document), newest first, with ids below ``below``."""
        found: list[Row] = []
        mark = None
        if self.deferred:
            mark = (yield (self._watermark, ()))[0][0]
            if below is None or below > mark + 1:
                found = yield from self._unindexed_hits(
                    viewer, query, filters, tier, below, columns, mark
                )
                if len(found) >= limit:
                    return found[:limit]
        sql, args = self._statement(viewer, query, filters, tier, below, f"{columns}, s.doc", mark)
        key = self._spelling.key
        rows = yield (sql + f" ORDER BY {key} DESC LIMIT {int(limit - len(found))}", args)
        return found + list(rows)

    def count(self, viewer: str, query: Query, filters: SearchFilters, cap: int) -> Steps[int]:
        """How many messages match, counted up to ``cap``."""
        unindexed: list[Row] = []
        mark = None
        if self.deferred:
            mark = (yield (self._watermark, ()))[0][0]
            unindexed = yield from self._unindexed_hits(
                viewer, query, filters, Tier.ALL, None, "m.id", mark
            )
        sql, args = self._statement(viewer, query, filters, Tier.ALL, None, "1", mark)
        rows = yield (f"SELECT count(*) FROM ({sql} LIMIT {int(cap)}) AS hits", args)
        return min(cap, len(unindexed) + int(rows[0][0]))

    def _unindexed_hits(
        self,
        viewer: str,
        query: Query,
        filters: SearchFilters,
        tier: str,
        below: int | None,
        columns: str,
        mark: int,
    ) -> Steps[list[Row]]:
        """The hits among messages past the index's end, matched here."""
        sql, args = self._statement(
            viewer, None, filters, tier, below, f"{columns}, m.content", mark
        )
        hits: list[Row] = []
        for row in (yield (sql + " ORDER BY m.id DESC", args)):
            values = tuple(cast("Sequence[Any]", row))  # the columns, then the content
            doc = document(values[-1] or "")
            if in_tier(doc, query, tier):
                hits.append((*values[:-1], doc))
        return hits

    def _statement(
        self,
        viewer: str,
        query: Query | None,
        filters: SearchFilters,
        tier: str,
        below: int | None,
        columns: str,
        mark: int | None = None,
    ) -> tuple[str, list[object]]:
        """A search's SQL: over the index (``query`` given; its part up to
        ``mark``), or over the messages past ``mark`` (``query`` None)."""
        spelling = self._spelling
        args: list[object] = [viewer]
        key = spelling.key if query is not None else "m.id"
        conditions = []

        def bound(test: str, value: object) -> None:
            args.append(value)
            conditions.append(test.format(f"${len(args)}"))

        if query is not None:
            conditions.append(spelling.match(query, tier, args))
            if mark is not None:
                bound(f"{key} <= {{}}", mark)
        elif mark is not None:
            bound("m.id > {}", mark)
        if below is not None:
            bound(f"{key} < {{}}", below)
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
        source = (
            f"message_search s JOIN messages m ON m.id = {spelling.key}"
            if query is not None
            else "messages m"
        )
        sql = (
            f"SELECT {columns} FROM {source} "
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
    search = SearchSQL(dialect)
    if search.deferred:
        # The mark records the progress (from 0, as the migration sets it).
        read = yield from search.catch_up(BACKFILL_CHUNK)
        return last + read
    rows = yield (dialect.sql(_EXISTING), (last, BACKFILL_CHUNK))
    if not rows:
        return last
    yield from search.index((row[0], row[1]) for row in rows)
    return int(rows[-1][0])
