"""Search: the index of every live message's search document, and the
queries that find messages in it.

Documents and needles are :mod:`roomcast.core.search`'s; each engine finds
the documents that contain every needle with its own trigram index: SQLite's
FTS5 table with the ``trigram`` tokenizer (``message_search MATCH '"a" AND
"b"'``, then ``search_holds``), PostgreSQL's ``pg_trgm`` GIN index (``doc LIKE
'%a%' AND doc LIKE '%b%'``). Both end in exact substring tests, so the engines
find the same rows.

A new message is findable once its ``chat`` is broadcast, an edit is found by
its new text and no longer by its old one, a deleted message not at all (see
:class:`SearchSQL` for how each engine keeps that). Who may read a room is
checked in the query, against the memberships and bans as they are when it
runs.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, cast

import msgspec

from roomcast.adapters.sql.dialect import Dialect
from roomcast.adapters.sql.rules import NO_BOUND
from roomcast.adapters.sql.steps import Row, Steps
from roomcast.core.search import Query, SearchFilters, Tier, document, in_tier

#: PostgreSQL: the newest documents a search tests one by one before it asks
#: the trigram index for the older ones (see :meth:`SearchSQL.find`).
RECENT_DOCUMENTS = 5_000
#: SQLite: the most characters of text one indexing pass reads (and holds).
INDEX_CHARACTERS = 1 << 20
#: Rows read as one JSON array: ``[[id, content or null], ...]``.
_ROWS = msgspec.json.Decoder(list[tuple[int, str | None]])
#: Messages read at a time when a migration indexes an existing database.
BACKFILL_CHUNK = 5000
#: Between the needles of one search_holds() argument: no document holds it.
NEEDLE_SEPARATOR = "\x1f"


@functools.lru_cache(maxsize=256)  # a row's tests ask for its document more than once
def _document_of(content: str) -> str:
    return document(content)


def _search_document(content: str | None) -> str:
    return _document_of(content) if content else ""


def _search_holds(content: str | None, needles: str) -> bool:
    doc = _search_document(content)
    return all(needle in doc for needle in needles.split(NEEDLE_SEPARATOR))


def register_sqlite_functions(conn: sqlite3.Connection) -> None:
    """The functions SQLite's search statements call: ``search_document(content)``
    and ``search_holds(content, needles)`` (every needle, joined by
    :data:`NEEDLE_SEPARATOR`, is in the content's document)."""
    conn.create_function("search_document", 1, _search_document, deterministic=True)
    conn.create_function("search_holds", 2, _search_holds, deterministic=True)


class IndexWork(NamedTuple):
    """What one pass of deferred indexing adds (:meth:`SearchSQL.pending`)."""

    before: tuple[int, int]  # (indexed_through, edits_through) it was read at
    after: tuple[int, int]  # what they become
    texts: list[tuple[int, str]]  # (message id, content) to add
    read: int  # rows read of the larger kind: fewer than asked is caught up
    # (a pass cut short by INDEX_CHARACTERS says it read all it was asked)


class _Spelling:
    """How one engine keeps and matches documents."""

    key: str  # the index's message id column
    doc: str = "s.doc"  # a hit's document
    #: Whether the index is kept after the messages' commits, and only added
    #: to (see SearchSQL).
    deferred: bool = False

    #: The statement that indexes any number of messages, bound by :meth:`pairs`.
    insert: str = ""

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

    def contains_all(self, needles: Sequence[str], args: list[object]) -> str:
        """Whether the document holds every needle, binding them onto ``args``."""
        tests = []
        for needle in needles:
            args.append(self.needle_arg(needle))
            tests.append(self.contains(f"${len(args)}"))
        return " AND ".join(tests)

    def match(self, query: Query, tier: str, args: list[object]) -> str:
        """The condition of the tier's hits, binding its values onto ``args``."""
        found = self.candidates(query, args)
        condition = self.contains_all(query.substring_needles, args)
        if found is not None:
            condition = f"{found} AND {condition}"
        if tier == Tier.WORDS:
            condition += " AND " + self.contains_all(query.word_needles, args)
        elif tier == Tier.SUBSTRINGS:
            condition += f" AND NOT ({self.contains_all(query.word_needles, args)})"
        return condition


class _SQLiteSpelling(_Spelling):
    key = "s.rowid"
    doc = "search_document(m.content)"
    deferred = True

    # One JSON array of [id, document] pairs: the whole batch is one step of
    # SQLite's, which releases the GIL once instead of once per row.
    insert = (
        "INSERT INTO message_search (rowid, doc) SELECT value ->> 0, value ->> 1 FROM json_each(?)"
    )

    def pairs(self, rows: Sequence[tuple[int, str]]) -> Sequence[object]:
        return (msgspec.json.encode(rows),)

    def candidates(self, query: Query, args: list[object]) -> str:
        # The index keeps no positions (detail=none: a fraction of the size,
        # and small merges) and no text (content=''): it finds the messages
        # whose documents held every trigram of the needles, and
        # search_holds() keeps those whose documents hold the needles now.
        trigrams = {n[i : i + 3] for n in query.substring_needles for i in range(len(n) - 2)}
        args.append(" AND ".join(f'"{t}"' for t in sorted(trigrams)))
        return f"message_search MATCH ${len(args)}"

    def contains_all(self, needles: Sequence[str], args: list[object]) -> str:
        args.append(NEEDLE_SEPARATOR.join(needles))
        return f"search_holds(m.content, ${len(args)})"


class _PostgresSpelling(_Spelling):
    key = "s.message_id"

    # The room comes from the message (written just before, in this transaction).
    insert = (
        "INSERT INTO message_search (message_id, doc, room_id) "
        "SELECT u.id, u.doc, m.room_id FROM unnest($1::bigint[], $2::text[]) AS u (id, doc) "
        "JOIN messages m ON m.id = u.id"
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

    On PostgreSQL each live message's document is written, changed and taken
    out in the transaction that stores, edits or deletes the message.

    On SQLite that cost too much on the hot path (FTS5's work per commit was
    most of a message's cost, and a writer's transaction holds up every
    message behind it), so the index lives in a file of its own beside the
    database (:mod:`roomcast.adapters.sqlite_search`), written by its own
    connection and thread in large transactions (:meth:`pending`, then
    :meth:`add`), never
    holding the database's write lock. ``search_state`` says how far it goes:
    ``indexed_through`` (ids commit in order with one writer, so every message
    up to it is indexed and every later one is not) and ``edits_through`` in
    ``search_edits``, which an edit's transaction appends to. A search reads
    the messages the index does not hold yet (the last fraction of a second,
    and edits just made) from the messages table and matches their documents
    itself, so what it finds is the same either way, at once.

    That index holds trigrams only, no text (FTS5 ``content=''``: less to
    write per message), and is only ever added to: an edited message's new
    document goes in beside its old one, a deleted message's stays. What it
    finds is a superset, and every hit is tested against the message's
    current content (``search_holds``) and ``deleted_at``, so an edit is found
    by its new text only and a deleted message not at all, with nothing ever
    taken out (edits and deletes are rare; what they leave costs a test).
    """

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._spelling = _SPELLINGS[dialect.name]
        self.deferred = self._spelling.deferred
        self._unindex = dialect.sql("DELETE FROM message_search WHERE message_id = $1")
        self._state = "SELECT indexed_through, edits_through FROM search_state"
        self._edited = dialect.sql("INSERT INTO search_edits (message_id) VALUES ($1)")
        # Deleted ones too: the mark moves past them. As one JSON array (SQLite
        # only): one step, so the GIL is released once, not once per row.
        # At most $3 characters of text besides the first message's, so a run
        # of long messages is not held whole in memory (and the rows it
        # leaves out are counted: the pass knows more waits).
        self._unindexed = dialect.sql(
            "SELECT json_group_array(json_array(id, content)) FILTER (WHERE ahead < $3), "
            "count(*) FROM (SELECT id, content, coalesce(sum(length(content)) OVER "
            "(ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS ahead "
            "FROM (SELECT id, content FROM messages WHERE id > $1 ORDER BY id LIMIT $2))"
        )
        self._edits = dialect.sql(
            "SELECT e.seq, m.id, m.content FROM search_edits e JOIN messages m "
            "ON m.id = e.message_id WHERE e.seq > $1 ORDER BY e.seq LIMIT $2"
        )
        self._recent = dialect.sql(
            "SELECT message_id FROM message_search WHERE message_id < $1 "
            "ORDER BY message_id DESC OFFSET $2 LIMIT 1"
        )
        self._advance = dialect.sql(
            "UPDATE search_state SET indexed_through = $1, edits_through = $2 "
            "WHERE indexed_through = $3 AND edits_through = $4 RETURNING 1"
        )

    # -- keeping the index --------------------------------------------------------------

    def index(self, messages: Iterable[tuple[int, str]]) -> Steps[None]:
        """New messages, ``(id, content)``, in their transaction (when not deferred)."""
        if self.deferred:
            return
        yield from self._insert(messages)

    def _insert(self, messages: Iterable[tuple[int, str]]) -> Steps[None]:
        yield from self._insert_documents(
            (message_id, document(content)) for message_id, content in messages
        )

    def _insert_documents(self, documents: Iterable[tuple[int, str]]) -> Steps[None]:
        rows = [row for row in documents if row[1]]  # "": nothing to find
        if rows:
            yield (self._spelling.insert, self._spelling.pairs(rows))

    def reindex(self, message_id: int, content: str) -> Steps[None]:
        """An edited message, in the edit's transaction: found by its new text only."""
        if self.deferred:
            yield (self._edited, (message_id,))  # the indexer adds its new document
        else:
            yield (self._unindex, (message_id,))
            yield from self._insert([(message_id, content)])

    def unindex(self, message_id: int) -> Steps[None]:
        """A deleted message, in the delete's transaction."""
        if not self.deferred:  # deferred: the hits' test leaves it out
            yield (self._unindex, (message_id,))

    def pending(self, chunk: int) -> Steps[IndexWork]:
        """Deferred indexing, first half (outside a transaction): up to ``chunk``
        messages past the index's end, and the new texts of up to ``chunk``
        edited messages it holds. Runs on the index's own connection, with the
        database attached."""
        state = (yield (self._state, ()))[0]
        mark, edits_mark = int(state[0]), int(state[1])
        packed = (yield (self._unindexed, (mark, chunk, INDEX_CHARACTERS)))[0]
        rows = _ROWS.decode(packed[0] or "[]")
        window = int(packed[1])
        edits = yield (self._edits, (edits_mark, chunk))
        # An edited message past the mark is read with its new text below.
        texts = [(row[1], row[2]) for row in edits if row[1] <= mark and row[2] is not None]
        texts += [(row[0], row[1]) for row in rows if row[1] is not None]
        return IndexWork(
            (mark, edits_mark),
            (int(rows[-1][0]) if rows else mark, int(edits[-1][0]) if edits else edits_mark),
            texts,
            chunk if len(rows) < window else max(len(rows), len(edits)),
        )

    def add(self, work: IndexWork, documents: Sequence[tuple[int, str]]) -> Steps[bool]:
        """Second half, in the index's transaction: the documents of ``work``,
        unless the index moved meanwhile (another process's indexer: False)."""
        moved = yield (self._advance, (*work.after, *work.before))
        if not moved:
            return False
        yield from self._insert_documents(documents)
        return True

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
        """Up to ``limit`` hits (rows of ``columns`` over messages ``m``, the id
        first, then the document), newest first, with ids below ``below``."""
        found: list[Row] = []
        state = None
        with_doc = f"{columns}, {self._spelling.doc}"
        order = f" ORDER BY {self._spelling.key} DESC LIMIT "
        if self.deferred:
            state = (yield (self._state, ()))[0]
            found = yield from self._unindexed_hits(
                viewer, query, filters, tier, below, columns, state
            )
        else:
            # PostgreSQL's trigram index finds documents in no order, and the
            # planner cannot tell a needle in half the messages (read the
            # newest in order, stop at the page's end) from one in a few (ask
            # the index): its estimates for LIKE were off 40x both ways on
            # 1 M messages (370 ms walks, 160 ms index reads). So it does
            # both, each bounded: the newest RECENT_DOCUMENTS in order, then,
            # for what is missing, the index on the older ones (few by then:
            # the page did not fill).
            parts = yield from self._parts(viewer, query, filters, tier, below, with_doc)
            if parts is not None:
                for sql, args in parts:
                    found += yield (sql + order + str(int(limit - len(found))), args)
                    if len(found) >= limit:
                        break
                return found
        sql, args = self._statement(viewer, query, filters, tier, below, with_doc, state=state)
        rows = yield (sql + order + str(int(limit)), args)
        if not found:
            return list(rows)
        # The unindexed hits may be edited messages among the indexed ones.
        return sorted([*found, *rows], key=lambda row: -int(row[0]))[:limit]

    def _parts(
        self,
        viewer: str,
        query: Query,
        filters: SearchFilters,
        tier: str,
        below: int | None,
        columns: str,
    ) -> Steps[list[tuple[str, list[object]]] | None]:
        """PostgreSQL: a search as its two statements, the newest
        :data:`RECENT_DOCUMENTS` documents below ``below`` and those older;
        None when there are fewer documents (one statement serves)."""
        bound = NO_BOUND if below is None else below
        rows = yield (self._recent, (bound, RECENT_DOCUMENTS - 1))
        if not rows:
            return None
        start = int(rows[0][0])
        return [
            self._statement(viewer, query, filters, tier, below, columns, recent_from=start),
            self._statement(viewer, query, filters, tier, below, columns, older_than=start),
        ]

    def count(self, viewer: str, query: Query, filters: SearchFilters, cap: int) -> Steps[int]:
        """How many messages match, counted up to ``cap``."""
        counted = 0
        state = None
        if self.deferred:
            state = (yield (self._state, ()))[0]
            unindexed = yield from self._unindexed_hits(
                viewer, query, filters, Tier.ALL, None, "m.id", state
            )
            counted = len(unindexed)
        else:
            parts = yield from self._parts(viewer, query, filters, Tier.ALL, None, "1")
            if parts is not None:  # as find() reads them
                for sql, args in parts:
                    counted += yield from self._count(sql, args, cap - counted)
                    if counted >= cap:
                        break
                return counted
        sql, args = self._statement(viewer, query, filters, Tier.ALL, None, "1", state=state)
        return min(cap, counted + (yield from self._count(sql, args, cap)))

    @staticmethod
    def _count(sql: str, args: list[object], cap: int) -> Steps[int]:
        rows = yield (f"SELECT count(*) FROM ({sql} LIMIT {int(cap)}) AS hits", args)
        return int(rows[0][0])

    def _unindexed_hits(
        self,
        viewer: str,
        query: Query,
        filters: SearchFilters,
        tier: str,
        below: int | None,
        columns: str,
        state: Row,
    ) -> Steps[list[Row]]:
        """The hits among the messages the index does not hold yet (past its
        end, or edited since it was brought up to date), matched here."""
        sql, args = self._statement(
            viewer, None, filters, tier, below, f"{columns}, m.content", state=state
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
        *,
        state: Row | None = None,
        recent_from: int | None = None,
        older_than: int | None = None,
    ) -> tuple[str, list[object]]:
        """A search's SQL: over the index (``query`` given; deferred, the part
        it holds by ``state``), or over the messages it does not hold yet
        (``query`` None). PostgreSQL, by :meth:`find`'s two parts: the
        documents from ``recent_from`` on, each tested, or those below
        ``older_than`` that the trigram index finds."""
        spelling = self._spelling
        args: list[object] = [viewer]
        key = spelling.key if query is not None else "m.id"
        conditions = []
        # PostgreSQL's index rows carry their room and are live messages only:
        # the messages are joined only for what they alone hold.
        rooms_indexed = query is not None and not self.deferred
        room = "s.room_id" if rooms_indexed else "m.room_id"
        joined = not rooms_indexed or "m." in columns or _on_messages(filters)
        index = "message_search"
        if recent_from is not None:
            # OFFSET 0: planned on its own, as a range of the primary key.
            args += [recent_from, NO_BOUND if below is None else below]
            index = (
                "(SELECT message_id, doc, room_id FROM message_search WHERE message_id "
                f">= ${len(args) - 1} AND message_id < ${len(args)} OFFSET 0)"
            )
        elif older_than is not None and query is not None:
            # MATERIALIZED: the index's hits are what the rest reads (read as
            # needed, so a count that reaches its cap stops early).
            args.append(older_than)
            older = f"s.message_id < ${len(args)} AND {spelling.match(query, tier, args)}"
            index = (
                "(WITH s AS MATERIALIZED (SELECT message_id, doc, room_id FROM message_search s "
                f"WHERE {older}) SELECT * FROM s)"
            )
            query = None  # matched above
        source = "messages m"
        if rooms_indexed or query is not None:
            source = f"{index} s"
            if joined:
                source += f" JOIN messages m ON m.id = {spelling.key}"

        def bound(test: str, value: object) -> None:
            args.append(value)
            conditions.append(test.format(f"${len(args)}"))

        if query is not None:
            conditions.append(spelling.match(query, tier, args))
        if state is not None:
            args += [state[0], state[1]]
            mark, edits = f"${len(args) - 1}", f"${len(args)}"
            edited = f"m.id IN (SELECT message_id FROM search_edits WHERE seq > {edits})"
            if query is not None:
                conditions.append(f"{key} <= {mark} AND NOT {edited}")
            else:
                conditions.append(f"(m.id > {mark} OR {edited})")
        if below is not None:
            bound(f"{key} < {{}}", below)
        if filters.room_id is not None:
            bound(f"{room} = {{}}", filters.room_id)
        if filters.room_name is not None:
            lowered = self._dialect.ascii_lower("name")
            bound(f"{room} IN (SELECT id FROM rooms WHERE {lowered} = {{}})", filters.room_name)
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
            f"{room} IN (SELECT r.id FROM rooms r WHERE EXISTS (SELECT 1 FROM room_members rm "
            "WHERE rm.room_id = r.id AND rm.user_id = $1) OR (r.private = 0 AND "
            "r.archived_at IS NULL AND NOT EXISTS (SELECT 1 FROM room_bans b "
            "WHERE b.room_id = r.id AND b.user_id = $1)))"
        )
        conditions += [readable, "m.deleted_at IS NULL"] if joined else [readable]
        sql = f"SELECT {columns} FROM {source} WHERE {' AND '.join(conditions)}"
        return self._dialect.sql(sql), args


def _on_messages(filters: SearchFilters) -> bool:
    """Whether a filter tests what only the messages table holds."""
    return any(
        value is not None
        for value in (filters.from_user, filters.thread_id, filters.before, filters.after)
    )


# -- indexing a database that had no index (migration) ---------------------------------

_EXISTING = (
    "SELECT id, content FROM messages WHERE id > $1 AND deleted_at IS NULL "
    "AND content IS NOT NULL ORDER BY id LIMIT $2"
)


def backfill(dialect: Dialect, last: int) -> Steps[int]:
    """Index up to :data:`BACKFILL_CHUNK` existing messages with ids above
    ``last``; returns the last id read (``last`` when there were none). For
    PostgreSQL: SQLite's index builds itself (see SearchSQL)."""
    search = SearchSQL(dialect)
    rows = yield (dialect.sql(_EXISTING), (last, BACKFILL_CHUNK))
    if not rows:
        return last
    yield from search.index((row[0], row[1]) for row in rows)
    return int(rows[-1][0])
