"""Messages: reading history and pages, and changing a stored message.

Storing new messages is the one write each engine does its own way (how a
batch numbers its rooms and inserts many rows at once differs most); the rows
it inserts and reads back have the column orders below.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from roomcast.adapters.sql.conversations import (
    THREAD_COLUMNS,
    ConversationSQL,
    mentions_list,
    thread_summary,
)
from roomcast.adapters.sql.dialect import Dialect
from roomcast.adapters.sql.rules import NO_BOUND, InsertPlan, MessageChange, refuse_change
from roomcast.adapters.sql.search import SearchSQL
from roomcast.adapters.sql.steps import Row, Steps
from roomcast.core.search import Query, SearchFilters
from roomcast.ports.store import (
    EditMessage,
    Outcome,
    Result,
    SequencedMessage,
    ToggleReaction,
)
from roomcast.protocol import ChatMessage, HistoryMessage, ThreadItem, ThreadSummary

MESSAGE_COLUMNS = (
    "id, room_id, user_id, content, type, created_at, client_msg_id, seq, thread_id, mentions"
)
HISTORY_COLUMNS = (
    "id, room_id, user_id, content, type, created_at, edited_at, thread_id, mentions, deleted_at"
)
#: The columns an insert fills, in the order of ``rules.InsertRun.rows``: a run
#: of plain messages (no thread, no mentions, the common case) fills the first
#: seven and leaves the others NULL, binding fewer values per row.
INSERT_COLUMNS = (
    "room_id, user_id, content, type, created_at, client_msg_id, seq, thread_id, mentions"
)
PLAIN_INSERT_COLUMNS = "room_id, user_id, content, type, created_at, client_msg_id, seq"


class MessageSQL:
    def __init__(self, dialect: Dialect, conversations: ConversationSQL, search: SearchSQL) -> None:
        sql = dialect.sql
        self._dialect = dialect
        self._conversations = conversations
        self._search = search
        live = "deleted_at IS NULL"
        # The timeline: messages that are no reply, and a deleted root stays
        # (as a placeholder) while its thread has live replies.
        self._history = sql(
            f"SELECT {HISTORY_COLUMNS} FROM messages WHERE room_id = $1 AND id < $2 "
            f"AND thread_id IS NULL AND ({live} OR EXISTS "
            "(SELECT 1 FROM threads WHERE threads.root_id = messages.id)) "
            "ORDER BY id DESC LIMIT $3"
        )
        self._thread_history = sql(
            f"SELECT {HISTORY_COLUMNS} FROM messages WHERE thread_id = $4 AND room_id = $1 "
            f"AND id < $2 AND {live} ORDER BY id DESC LIMIT $3"
        )
        # The same, newer than a message, read oldest first (for a page around one).
        self._history_after = sql(
            f"SELECT {HISTORY_COLUMNS} FROM messages WHERE room_id = $1 AND id > $2 "
            f"AND thread_id IS NULL AND ({live} OR EXISTS "
            "(SELECT 1 FROM threads WHERE threads.root_id = messages.id)) "
            "ORDER BY id LIMIT $3"
        )
        self._thread_history_after = sql(
            f"SELECT {HISTORY_COLUMNS} FROM messages WHERE thread_id = $4 AND room_id = $1 "
            f"AND id > $2 AND {live} ORDER BY id LIMIT $3"
        )
        self._threads = sql(
            f"SELECT {THREAD_COLUMNS} FROM threads WHERE room_id = $1 AND last_reply_id < $2 "
            "ORDER BY last_reply_id DESC LIMIT $3"
        )
        self._seq_range = sql(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 "
            f"AND seq > $2 AND seq <= $3 AND {live} ORDER BY seq"
        )
        self._since = sql(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND id > $2 "
            f"AND seq <= $3 AND {live} ORDER BY id DESC LIMIT $4"
        )
        # Locked where other processes may change it too, so that an edit
        # cannot bring back the text of a message deleted at the same moment.
        # With the changer's and the author's roles in the room and whether the
        # room is archived: what the rules need to allow a change.
        role = (
            "(SELECT role FROM room_members WHERE room_members.room_id = messages.room_id "
            "AND room_members.user_id = {})"
        )
        self._find_live = sql(
            f"SELECT room_id, user_id, {role.format('$2')}, {role.format('messages.user_id')}, "
            "(SELECT archived_at FROM rooms WHERE rooms.id = messages.room_id) "
            f"FROM messages WHERE id = $1 AND {live}{dialect.row_lock}"
        )
        self._unreact = sql(
            "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3 "
            "RETURNING 1"
        )
        # DO NOTHING: the same reaction added through another process at the
        # same moment is added all the same.
        self._react = sql(
            "INSERT INTO reactions (message_id, user_id, emoji, created_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
        )
        self._edit = sql("UPDATE messages SET content = $1, edited_at = $2 WHERE id = $3")
        # The content is erased, not hidden: a deleted message keeps only its id.
        self._delete = sql("UPDATE messages SET content = NULL, deleted_at = $1 WHERE id = $2")
        self._delete_reactions = sql("DELETE FROM reactions WHERE message_id = $1")

    # -- reads ------------------------------------------------------------------------

    def history(
        self,
        room_id: int,
        before: int | None,
        limit: int,
        thread_id: int | None = None,
        after: int | None = None,
    ) -> Steps[list[HistoryMessage]]:
        """Up to ``limit`` messages, oldest first: the timeline, or a thread's
        live replies; the newest ones with ids below ``before``, or (given
        ``after``) the oldest ones with ids above it."""
        if after is not None:
            if thread_id is None:
                rows = yield (self._history_after, (room_id, after, limit))
            else:
                rows = yield (self._thread_history_after, (room_id, after, limit, thread_id))
            rows = rows[::-1]  # newest first, as the items are made from
        else:
            bound = before if before is not None else NO_BOUND
            if thread_id is None:
                rows = yield (self._history, (room_id, bound, limit))
            else:
                rows = yield (self._thread_history, (room_id, bound, limit, thread_id))
        return (yield from self._items(rows, with_threads=thread_id is None))

    def search(
        self,
        viewer: str,
        query: Query,
        filters: SearchFilters,
        tier: str,
        below: int | None,
        limit: int,
    ) -> Steps[list[tuple[HistoryMessage, str]]]:
        """Up to ``limit`` hits, newest first, each with its search document."""
        columns = ", ".join(f"m.{c.strip()}" for c in HISTORY_COLUMNS.split(","))
        rows = yield from self._search.find(viewer, query, filters, tier, below, limit, columns)
        items = yield from self._items(rows, with_threads=True)
        return list(zip(reversed(items), (row[10] for row in rows), strict=True))

    def threads(self, room_id: int, before: int | None, limit: int) -> Steps[list[ThreadItem]]:
        """The room's threads by last activity (their newest reply's id), newest
        first, with their roots; ``before`` is a last reply id."""
        bound = before if before is not None else NO_BOUND
        rows = yield (self._threads, (room_id, bound, limit))
        if not rows:
            return []
        ids = [row[0] for row in rows]
        roots = yield (_by_ids(self._dialect, len(ids)), self._dialect.list_args(ids))
        items = {item.id: item for item in (yield from self._items(roots, with_threads=False))}
        return [ThreadItem(items[row[0]], thread_summary(row)) for row in rows if row[0] in items]

    def _items(self, rows: Sequence[Row], with_threads: bool) -> Steps[list[HistoryMessage]]:
        """History items of rows (newest first), with reactions and thread summaries."""
        reactions: Sequence[Row] = ()
        summaries: dict[int, ThreadSummary] = {}
        if rows:
            ids = [row[0] for row in rows]
            args = self._dialect.list_args(ids)
            reactions = yield (_reactions(self._dialect, len(ids)), args)
            if with_threads:
                found = yield (_summaries(self._dialect, len(ids)), args)
                summaries = {row[0]: thread_summary(row) for row in found}
        return history_items(rows, reactions, summaries)

    def in_seq_range(
        self, room_id: int, after_seq: int, through_seq: int
    ) -> Steps[list[SequencedMessage]]:
        rows = yield (self._seq_range, (room_id, after_seq, through_seq))
        return [sequenced_message(row) for row in rows]

    def since(
        self, room_id: int, since_id: int, through_seq: int | None, limit: int
    ) -> Steps[tuple[list[SequencedMessage], bool]]:
        bound = through_seq if through_seq is not None else NO_BOUND
        rows = yield (self._since, (room_id, since_id, bound, limit + 1))
        return newest_page(rows, limit)

    # -- changes (group-committed) ------------------------------------------------------

    def change(self, plan: InsertPlan, op: MessageChange) -> Steps[Result]:
        """Edit, delete or react to a stored message, as the rules allow."""
        found = yield (self._find_live, (op.message_id, op.user_id))
        if (refused := refuse_change(op, found[0] if found else None)) is not None:
            return refused
        room_id = found[0][0]
        done = Result(Outcome.DONE, room_id=room_id, message_id=op.message_id)
        if isinstance(op, ToggleReaction):
            if (yield (self._unreact, (op.message_id, op.user_id, op.emoji))):
                return done
            yield (self._react, (op.message_id, op.user_id, op.emoji, op.created_at))
            return Result(Outcome.DONE, room_id=room_id, message_id=op.message_id, added=True)
        if isinstance(op, EditMessage):
            yield (self._edit, (op.content, op.edited_at, op.message_id))
            yield from self._search.reindex(op.message_id, op.content)
            plan.edited(op.message_id, op.content)
            return (yield from self._conversations.after_edit(op, done))
        yield (self._delete, (op.deleted_at, op.message_id))
        yield (self._delete_reactions, (op.message_id,))
        yield from self._search.unindex(op.message_id)
        plan.deleted(op.message_id)
        return (yield from self._conversations.after_delete(op.message_id, done))


@functools.lru_cache(maxsize=256)
def _by_ids(dialect: Dialect, count: int) -> str:
    return dialect.sql(
        f"SELECT {HISTORY_COLUMNS} FROM messages WHERE "
        + dialect.in_list("id", 1, count, "bigint")
        + " ORDER BY id DESC"
    )


@functools.lru_cache(maxsize=256)
def _summaries(dialect: Dialect, count: int) -> str:
    return dialect.sql(
        f"SELECT {THREAD_COLUMNS} FROM threads WHERE "
        + dialect.in_list("root_id", 1, count, "bigint")
    )


@functools.lru_cache(maxsize=256)
def _reactions(dialect: Dialect, count: int) -> str:
    """The reactions to ``count`` messages, in the order they were made."""
    return dialect.sql(
        "SELECT message_id, emoji, user_id FROM reactions "
        f"WHERE {dialect.in_list('message_id', 1, count, 'bigint')} ORDER BY created_at, user_id"
    )


# -- rows to records ------------------------------------------------------------------


def chat_message(row: Row) -> ChatMessage:
    """A live message from a row of :data:`MESSAGE_COLUMNS`."""
    return ChatMessage(
        id=row[0],
        room_id=row[1],
        user_id=row[2],
        content=row[3],
        type=row[4],
        created_at=row[5],
        thread_id=row[8],
        mentions=tuple(mentions_list(row[9])),
        client_msg_id=row[6],
    )


def sequenced_message(row: Row) -> SequencedMessage:
    return SequencedMessage(seq=row[7], message=chat_message(row))


def newest_page(rows: Sequence[Row], limit: int) -> tuple[list[SequencedMessage], bool]:
    """Rows read newest first with ``LIMIT limit + 1``: the page oldest first, and
    whether older messages were left out (the extra row says so without a count)."""
    return [sequenced_message(row) for row in reversed(rows[:limit])], len(rows) > limit


def history_items(
    rows: Sequence[Row],
    reaction_rows: Iterable[Row],
    summaries: dict[int, ThreadSummary] | None = None,
) -> list[HistoryMessage]:
    """History items from rows of :data:`HISTORY_COLUMNS`, newest first, as read.

    ``reaction_rows`` are ``(message_id, emoji, user_id)`` in the order the
    reactions were made; ``summaries`` the threads of roots among them. The
    items come back oldest first (a deleted root with empty content).
    """
    summaries = summaries or {}
    reactions: dict[int, dict[str, list[str]]] = {}
    for row in reaction_rows:
        reactions.setdefault(row[0], {}).setdefault(row[1], []).append(row[2])
    return [
        HistoryMessage(
            id=row[0],
            room_id=row[1],
            user_id=row[2],
            content=row[3] or "",
            type=row[4],
            created_at=row[5],
            edited_at=row[6],
            reactions=reactions.get(row[0], {}),
            thread_id=row[7],
            mentions=mentions_list(row[8]),
            thread=summaries.get(row[0]),
            deleted_at=row[9],
        )
        for row in reversed(rows)
    ]
