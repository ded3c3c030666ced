"""Conversations: threads' summaries, mentions, notifications, read markers
and unread counts.

What a message does to them is written in the same group-committed
transaction as the message itself (its insert, edit or delete), so a count
read afterwards always agrees with the messages, on either engine and after
any restart. The rules (who is notified, what a marker may do) are
:mod:`roomcast.core.conversations`'s.

Counts stay cheap however long the history: each is a range of the room's
covering index (``messages_by_room``) from the member's marker, which starts at
the room's newest message when they join, and stops at
:data:`~roomcast.protocol.UNREAD_COUNT_LIMIT`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import msgspec

from roomcast.adapters.sql.dialect import Dialect
from roomcast.adapters.sql.steps import Row, Steps
from roomcast.core.conversations import excerpt, kept_mentions, reply_recipients
from roomcast.ports.store import (
    EditMessage,
    InsertMessage,
    MarkRead,
    Outcome,
    ReadNotifications,
    Result,
)
from roomcast.protocol import (
    UNREAD_COUNT_LIMIT,
    Notification,
    NotificationInfo,
    NotificationKind,
    RoomUnread,
    ThreadSummary,
    ThreadUpdated,
)

#: A new member's read marker: the room's newest message ($1 is the room).
START_READ = "(SELECT COALESCE(MAX(id), 0) FROM messages WHERE messages.room_id = $1)"
#: Distinct authors a thread summary names.
THREAD_PARTICIPANTS = 10

_encode = msgspec.json.encode
_mentions_decoder = msgspec.json.Decoder(list[str])


def mentions_json(mentions: Sequence[str]) -> str | None:
    """How a message's mentions are stored: a JSON array, NULL for none."""
    return _encode(list(mentions)).decode() if mentions else None


def mentions_list(stored: str | None) -> list[str]:
    return [] if stored is None else _mentions_decoder.decode(stored)


#: The columns :func:`thread_summary` reads.
THREAD_COLUMNS = "root_id, reply_count, last_reply_at, participants, last_reply_id"


def thread_summary(row: Row) -> ThreadSummary:
    """A summary from a row of :data:`THREAD_COLUMNS`."""
    return ThreadSummary(row[1], row[2], mentions_list(row[3]), row[4])


class ConversationSQL:
    def __init__(self, dialect: Dialect) -> None:
        sql = dialect.sql
        self._dialect = dialect
        self._message = sql("SELECT room_id, thread_id, deleted_at FROM messages WHERE id = $1")
        self._message_state = sql("SELECT thread_id, mentions FROM messages WHERE id = $1")
        self._set_mentions = sql("UPDATE messages SET mentions = $1 WHERE id = $2")
        # The root's author (even if the root is deleted) and the authors of
        # the live replies before this one who are members still.
        self._participants = sql(
            "SELECT user_id FROM messages WHERE (id = $1 OR thread_id = $1) AND id < $2 "
            "AND (deleted_at IS NULL OR id = $1) AND user_id IN "
            "(SELECT user_id FROM room_members WHERE room_id = $3) "
            "GROUP BY user_id ORDER BY MIN(id)"
        )
        self._notify = sql(
            "INSERT INTO notifications (user_id, kind, room_id, message_id, thread_id, "
            "from_user_id, excerpt, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (message_id, user_id) DO UPDATE SET kind = excluded.kind, "
            "excerpt = excluded.excerpt, read_at = NULL RETURNING id, created_at"
        )
        self._new_excerpt = sql("UPDATE notifications SET excerpt = $2 WHERE message_id = $1")
        self._retract_all = sql(
            "DELETE FROM notifications WHERE message_id = $1 RETURNING user_id, id"
        )
        # Serialises the summaries of one thread across processes: every
        # change to a thread locks its root first, then counts.
        self._lock_root = sql(f"SELECT id FROM messages WHERE id = $1{dialect.row_lock}")
        self._count = sql(
            "SELECT COUNT(*), MAX(created_at), MAX(id) FROM messages "
            "WHERE thread_id = $1 AND deleted_at IS NULL"
        )
        self._authors = sql(
            "SELECT user_id FROM messages WHERE thread_id = $1 AND deleted_at IS NULL "
            f"GROUP BY user_id ORDER BY MAX(id) DESC LIMIT {THREAD_PARTICIPANTS}"
        )
        self._upsert_thread = sql(
            "INSERT INTO threads "
            "(root_id, room_id, reply_count, last_reply_at, last_reply_id, participants) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (root_id) DO UPDATE SET "
            "reply_count = excluded.reply_count, last_reply_at = excluded.last_reply_at, "
            "last_reply_id = excluded.last_reply_id, participants = excluded.participants"
        )
        self._drop_thread = sql("DELETE FROM threads WHERE root_id = $1")
        self._member_read = sql(
            "SELECT read_id FROM room_members WHERE room_id = $1 AND user_id = $2"
        )
        self._move_read = sql(
            "UPDATE room_members SET read_id = $3 "
            "WHERE room_id = $1 AND user_id = $2 AND read_id < $3 RETURNING 1"
        )
        self._move_thread_read = sql(
            "INSERT INTO thread_reads (user_id, root_id, room_id, read_id) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, root_id) DO UPDATE "
            "SET read_id = excluded.read_id WHERE thread_reads.read_id < excluded.read_id "
            "RETURNING 1"
        )
        self._read_timeline = sql(
            "UPDATE notifications SET read_at = $4 WHERE user_id = $1 AND room_id = $2 "
            "AND thread_id IS NULL AND message_id <= $3 AND read_at IS NULL "
            "RETURNING id, room_id"
        )
        # A thread's marker reads its replies up to it, and its root.
        self._read_thread = sql(
            "UPDATE notifications SET read_at = $4 WHERE user_id = $1 AND room_id = $2 "
            "AND (thread_id = $5 AND message_id <= $3 OR message_id = $5) "
            "AND read_at IS NULL RETURNING id, room_id"
        )
        unread = (
            "SELECT m.room_id, m.read_id, "
            "(SELECT COUNT(*) FROM (SELECT 1 FROM messages x WHERE x.room_id = m.room_id "
            "AND x.id > m.read_id AND x.thread_id IS NULL AND x.deleted_at IS NULL "
            f"AND x.user_id <> $1 LIMIT {UNREAD_COUNT_LIMIT}) AS counted), "
            "(SELECT COUNT(*) FROM notifications n WHERE n.user_id = $1 "
            "AND n.room_id = m.room_id AND n.read_at IS NULL AND n.kind = 'mention'), "
            "COALESCE((SELECT x.id FROM messages x WHERE x.room_id = m.room_id "
            "AND x.thread_id IS NULL AND x.deleted_at IS NULL ORDER BY x.id DESC LIMIT 1), 0) "
            "FROM room_members m WHERE m.user_id = $1"
        )
        self._unread_sql = unread
        self._unread_all = sql(unread + " ORDER BY m.room_id")
        listing = (
            "SELECT id, kind, room_id, message_id, thread_id, from_user_id, excerpt, "
            "created_at, read_at FROM notifications WHERE user_id = $1 AND id < $2 "
            "AND room_id IN (SELECT room_id FROM room_members WHERE user_id = $1)"
        )
        self._notifications = sql(listing + " ORDER BY id DESC LIMIT $3")
        self._unread_notifications = sql(listing + " AND read_at IS NULL ORDER BY id DESC LIMIT $3")

    # -- reads --------------------------------------------------------------------

    def thread_root(self, room_id: int, message_id: int) -> Steps[int | None]:
        rows = yield (self._message, (message_id,))
        if not rows or rows[0][0] != room_id or rows[0][2] is not None:
            return None
        return rows[0][1] if rows[0][1] is not None else message_id

    def unread(self, user_id: str, room_ids: Sequence[int] | None) -> Steps[list[RoomUnread]]:
        if room_ids is None:
            rows = yield (self._unread_all, (user_id,))
        elif not room_ids:
            return []
        else:
            statement = _listed(
                self._dialect, self._unread_sql, "m.room_id", 2, len(room_ids), "bigint",
                " ORDER BY m.room_id",
            )  # fmt: skip
            rows = yield (statement, (user_id, *self._dialect.list_args(room_ids)))
        return [RoomUnread(row[0], row[2], row[3], row[1], row[4]) for row in rows]

    def notifications(
        self, user_id: str, unread_only: bool, before: int | None, limit: int
    ) -> Steps[list[NotificationInfo]]:
        statement = self._unread_notifications if unread_only else self._notifications
        bound = before if before is not None else 2**63 - 1
        rows = yield (statement, (user_id, bound, limit))
        return [
            NotificationInfo(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8])
            for row in rows
        ]

    # -- what a message does (group-committed with it) ----------------------------

    def after_insert(self, op: InsertMessage, result: Result) -> Steps[Result]:
        """A new message's mentions, notifications and thread summary."""
        mentioned: tuple[str, ...] = ()
        if op.mentions:
            mentioned = yield from self._kept(op.room_id, op.mentions, op.user_id)
            if mentioned != op.mentions:
                yield (self._set_mentions, (mentions_json(mentioned), result.message_id))
        repliers: tuple[str, ...] = ()
        if op.thread_id is not None:
            rows = yield (self._participants, (op.thread_id, result.message_id, op.room_id))
            repliers = reply_recipients((row[0] for row in rows), op.user_id, mentioned)
        notified = []
        text = excerpt(op.content)
        about = (op.room_id, result.message_id, op.thread_id, op.user_id, text, op.created_at)
        for user in mentioned:
            notified.append((yield from self._notify_one(user, "mention", *about)))
        for user in repliers:
            notified.append((yield from self._notify_one(user, "reply", *about)))
        thread = None
        if op.thread_id is not None:
            thread = yield from self.summarize(op.thread_id, op.room_id)
        return msgspec.structs.replace(
            result, mentions=mentioned, notified=tuple(notified), thread=thread
        )

    def after_edit(self, op: EditMessage, result: Result) -> Steps[Result]:
        """An edit notifies whom it newly mentions and retracts what it unmentions."""
        row = (yield (self._message_state, (op.message_id,)))[0]
        thread_id: int | None = row[0]
        before = tuple(mentions_list(row[1]))
        mentions, notified, retracted = before, [], []
        text = excerpt(op.content)
        yield (self._new_excerpt, (op.message_id, text))
        if op.mentions is not None:
            mentions = yield from self._kept(result.room_id, op.mentions, op.user_id)
            yield (self._set_mentions, (mentions_json(mentions), op.message_id))
            about = (result.room_id, op.message_id, thread_id, op.user_id, text, op.edited_at)
            for user in mentions:
                if user not in before:
                    notified.append((yield from self._notify_one(user, "mention", *about)))
            gone = [user for user in before if user not in mentions]
            if gone:
                statement = _listed(
                    self._dialect, _RETRACT_MENTIONS, "user_id", 2, len(gone), "text",
                    " RETURNING user_id, id",
                )  # fmt: skip
                rows = yield (statement, (op.message_id, *self._dialect.list_args(gone)))
                retracted = [(row[0], row[1]) for row in rows]
        thread = None
        if thread_id is not None:
            thread = yield from self.summarize(thread_id, result.room_id)
        return msgspec.structs.replace(
            result,
            mentions=mentions,
            notified=tuple(notified),
            retracted=tuple(retracted),
            thread=thread,
            thread_id=thread_id,
        )

    def after_delete(self, message_id: int, result: Result) -> Steps[Result]:
        """A deleted message notifies nobody any more; a reply's thread shrinks."""
        thread_id = (yield (self._message_state, (message_id,)))[0][0]
        rows = yield (self._retract_all, (message_id,))
        thread = None
        if thread_id is not None:
            thread = yield from self.summarize(thread_id, result.room_id)
        return msgspec.structs.replace(
            result,
            retracted=tuple((row[0], row[1]) for row in rows),
            thread=thread,
            thread_id=thread_id,
        )

    def summarize(self, root_id: int, room_id: int) -> Steps[ThreadUpdated]:
        """Count the thread's live replies again and keep its row (none once empty)."""
        yield (self._lock_root, (root_id,))
        row = (yield (self._count, (root_id,)))[0]
        count: int = row[0]
        last_at: int = row[1]
        last_id: int = row[2]
        if not count:
            yield (self._drop_thread, (root_id,))
            return ThreadUpdated(room_id, root_id, 0, None, [])
        authors = [row[0] for row in (yield (self._authors, (root_id,)))]
        participants = mentions_json(authors)
        yield (self._upsert_thread, (root_id, room_id, count, last_at, last_id, participants))
        return ThreadUpdated(room_id, root_id, count, last_at, authors)

    def _kept(self, room_id: int, named: Sequence[str], author: str) -> Steps[tuple[str, ...]]:
        if not named:
            return ()
        statement = _listed(self._dialect, _MEMBERS_AMONG, "user_id", 2, len(named), "text")
        rows = yield (statement, (room_id, *self._dialect.list_args(list(named))))
        return kept_mentions(named, (row[0] for row in rows), author)

    def _notify_one(
        self,
        user: str,
        kind: NotificationKind,
        room_id: int,
        message_id: int,
        thread_id: int | None,
        from_user: str,
        text: str,
        at: int,
    ) -> Steps[tuple[str, Notification]]:
        args = (user, kind, room_id, message_id, thread_id, from_user, text, at)
        row = (yield (self._notify, args))[0]
        return user, Notification(
            row[0], kind, room_id, message_id, thread_id, from_user, text, row[1]
        )

    # -- read markers ---------------------------------------------------------------

    def mark_read(self, op: MarkRead) -> Steps[Result]:
        """Move a marker forward (never back) and read the notifications it passes."""
        found = yield (self._message, (op.message_id,))
        in_place = bool(found) and found[0][0] == op.room_id
        if in_place and op.thread_id is None:
            in_place = found[0][1] is None  # a reply is read in its thread
        elif in_place:
            # The thread's root itself (a message of the timeline), or one of its replies.
            is_root = op.message_id == op.thread_id and found[0][1] is None
            in_place = is_root or found[0][1] == op.thread_id
        if not in_place:
            return Result(Outcome.NOT_FOUND, message_id=op.message_id)
        if not (yield (self._member_read, (op.room_id, op.user_id))):
            return Result(Outcome.FORBIDDEN, room_id=op.room_id, message_id=op.message_id)
        if op.thread_id is None:
            moved = yield (self._move_read, (op.room_id, op.user_id, op.message_id))
        else:
            args = (op.user_id, op.thread_id, op.room_id, op.message_id)
            moved = yield (self._move_thread_read, args)
        # Notifications the marker passes are read even when it does not move:
        # an edit may have mentioned the user in a message already read.
        args2: tuple[object, ...] = (op.user_id, op.room_id, op.message_id, op.read_at)
        if op.thread_id is None:
            read: Sequence[Row] = yield (self._read_timeline, args2)
        else:
            read = yield (self._read_thread, (*args2, op.thread_id))
        return Result(
            Outcome.DONE,
            room_id=op.room_id,
            message_id=op.message_id,
            added=bool(moved),
            read=tuple((row[0], row[1]) for row in read),
            thread_id=op.thread_id,
        )

    def read_notifications(self, op: ReadNotifications) -> Steps[Result]:
        statement = _listed(
            self._dialect, _READ_IDS, "id", 3, len(op.ids), "bigint", " RETURNING id, room_id"
        )
        rows = yield (statement, (op.user_id, op.read_at, *self._dialect.list_args(op.ids)))
        return Result(Outcome.DONE, read=tuple((row[0], row[1]) for row in rows))


# -- statements by list size (cached, like the other IN lists) ----------------------


@functools.lru_cache(maxsize=512)
def _listed(
    dialect: Dialect, head: str, expr: str, first: int, count: int, sqltype: str, tail: str = ""
) -> str:
    """``head`` AND ``expr`` in a list of ``count`` values bound from ``first`` on, ``tail``."""
    return dialect.sql(f"{head} AND {dialect.in_list(expr, first, count, sqltype)}{tail}")


_MEMBERS_AMONG = "SELECT user_id FROM room_members WHERE room_id = $1"
_RETRACT_MENTIONS = "DELETE FROM notifications WHERE message_id = $1 AND kind = 'mention'"
_READ_IDS = "UPDATE notifications SET read_at = $2 WHERE user_id = $1 AND read_at IS NULL"
