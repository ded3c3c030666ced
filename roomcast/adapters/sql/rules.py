"""What every store decides the same way, whatever its SQL.

The SQLite and PostgreSQL stores differ in how they reach the database (a
reader thread or a pool, one writer or several processes), not in what an
operation means. The meaning lives here, once: which outcome an edit by
someone else gets, when a client's retry is a duplicate, which room sequence
number each new message gets. The SQL around it is in the feature modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from roomcast.adapters.sql.conversations import mentions_json, mentions_list
from roomcast.adapters.sql.steps import Row
from roomcast.core.membership import Action, Role, refusal
from roomcast.ports.store import (
    DeleteMessage,
    EditMessage,
    InsertMessage,
    Operation,
    Outcome,
    Result,
    StoreUnavailable,
    ToggleReaction,
)
from roomcast.protocol import MAX_ID, ChatMessage, MessageKind

#: Larger than any id or sequence number: "no upper bound" in one SQL text.
NO_BOUND = 2**63 - 1

MessageChange = EditMessage | DeleteMessage | ToggleReaction


# -- rooms ---------------------------------------------------------------------------


def room_number(candidate: int) -> int:
    """A number taken for a new room, if it may be handed out (never above
    :data:`~roomcast.protocol.MAX_ID`, the largest a browser holds exactly)."""
    if not 1 <= candidate <= MAX_ID:
        raise StoreUnavailable("no room id is left")
    return candidate


def creation_limit(max_rooms: int | None) -> int:
    """The ``max_rooms`` bound as a number for counting created rooms.

    Rooms are counted even without a limit, so that a limit set later counts
    what was created before it.
    """
    return NO_BOUND if max_rooms is None else max_rooms


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def name_key(text: str) -> str:
    """A name filter as the stores compare it: ASCII letters in lower case.

    Only ASCII: SQLite's ``lower()`` folds nothing else, and PostgreSQL's folds
    by the database's locale, so the PostgreSQL store folds names with
    ``translate`` over the same 26 letters and both stores match the same rooms.
    """
    return text.translate(_ASCII_LOWER)


# -- changes to a stored message ------------------------------------------------------


def refuse_change(op: MessageChange, found: Row | None) -> Result | None:
    """The result of an edit, delete or reaction that must not happen, else ``None``.

    ``found`` is ``(room_id, user_id)`` of the live message, ``None`` when
    there is none (never stored, or deleted).
    """
    if found is None:
        return Result(Outcome.NOT_FOUND, message_id=op.message_id)
    room_id, author, changer_role, author_role = found[0], found[1], found[2], found[3]
    archived_at = found[4]
    if room_id not in op.rooms:
        # Outside the caller's rooms a message is as good as unknown to them:
        # answering "forbidden" would reveal that it exists.
        return Result(Outcome.NOT_FOUND, message_id=op.message_id)
    if archived_at is not None:
        return Result(Outcome.ARCHIVED, room_id=room_id, message_id=op.message_id)
    if isinstance(op, ToggleReaction) or author == op.user_id:
        return None
    if isinstance(op, DeleteMessage) and changer_role is not None:
        # The room's owners and moderators delete anyone's message (of a role not above theirs).
        actor = Role(changer_role)
        target = Role(author_role) if author_role is not None else Role.MEMBER
        if refusal(actor, Action.DELETE_ANY_MESSAGE, target) is None:
            return None
    return Result(Outcome.FORBIDDEN, room_id=room_id, message_id=op.message_id)


# -- inserts and room sequence numbers --------------------------------------------------


@dataclass(slots=True)
class _Message:
    """A message this batch knows under a client id: stored before, or inserted by it."""

    room_id: int
    user_id: str
    content: str | None  # None once deleted
    kind: str
    created_at: int
    client_msg_id: str | None
    seq: int
    id: int = 0  # 0 until inserted
    thread_id: int | None = None
    mentions: tuple[str, ...] = ()

    def chat(self, content: str) -> ChatMessage:
        return ChatMessage(
            id=self.id,
            room_id=self.room_id,
            user_id=self.user_id,
            content=content,
            type=cast("MessageKind", self.kind),  # stored by us, so a valid kind
            created_at=self.created_at,
            thread_id=self.thread_id,
            mentions=self.mentions,
            client_msg_id=self.client_msg_id,
        )


def client_ids(ops: Iterable[Operation]) -> list[tuple[str, str]]:
    """The ``(user_id, client_msg_id)`` pairs of a batch's inserts, each once.

    The store reads the messages already stored under them (rows of
    ``messages.MESSAGE_COLUMNS``) and hands them to :class:`InsertPlan`.
    """
    keys = {
        (op.user_id, op.client_msg_id): None
        for op in ops
        if isinstance(op, InsertMessage) and op.client_msg_id is not None
    }
    return list(keys)


class InsertPlan:
    """The messages one batch inserts: which are new, and their room sequence numbers.

    A batch raises each room's ``last_seq`` once, by the number of messages
    it stores there, before it inserts any (on PostgreSQL that update is the
    lock that orders two processes writing to one room). So the count must be
    known first, and it must be exact, or the room would get a gap: an
    insert whose client id is already stored, or appears earlier in the
    batch, stores nothing. Which ones those are depends only on the client
    ids stored before the batch, since messages are never removed, only
    emptied, so it is decided up front and cannot change while the batch runs.

    Use: ``plan = InsertPlan(ops, stored_rows)``; raise each room of
    :attr:`counts` by its count (in ascending room order) and pass the new
    ``last_seq`` values to :meth:`begin`; then, in batch order, turn each run
    of consecutive inserts into an :class:`InsertRun` with :meth:`run`,
    insert its rows and collect :meth:`InsertRun.results`, and apply the other
    operations, telling :meth:`edited` and :meth:`deleted` what they changed;
    finally :meth:`finish`.
    """

    def __init__(self, ops: Iterable[Operation], stored: Iterable[Row]) -> None:
        self._by_key: dict[tuple[str, str], _Message] = {}
        self._by_id: dict[int, _Message] = {}
        for row in stored:
            message = _Message(
                row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[0], row[8],
                tuple(mentions_list(row[9])),
            )  # fmt: skip
            self._by_key[(row[2], row[6])] = message
            self._by_id[row[0]] = message
        #: Messages the batch stores, per room.
        self.counts: dict[int, int] = {}
        seen = set(self._by_key)
        for op in ops:
            if not isinstance(op, InsertMessage):
                continue
            if op.client_msg_id is not None:
                key = (op.user_id, op.client_msg_id)
                if key in seen:
                    continue
                seen.add(key)
            self.counts[op.room_id] = self.counts.get(op.room_id, 0) + 1
        self._next: dict[int, int] = {}
        self._last: dict[int, int] = {}

    def begin(self, last_seqs: Mapping[int, int]) -> None:
        """Start numbering from the rooms' raised ``last_seq`` values."""
        for room_id, count in self.counts.items():
            if room_id not in last_seqs:
                raise StoreUnavailable(f"room {room_id} does not exist")
            self._next[room_id] = last_seqs[room_id] - count
            self._last[room_id] = last_seqs[room_id]

    def run(self, ops: Sequence[InsertMessage]) -> InsertRun:
        """Number a run of consecutive inserts and decide which of them store nothing."""
        return InsertRun(self, ops)

    def edited(self, message_id: int, content: str) -> None:
        """A message was edited in this batch: a later retry of it reports the new text."""
        if (message := self._by_id.get(message_id)) is not None:
            message.content = content

    def deleted(self, message_id: int) -> None:
        """A message was deleted in this batch: a later retry of it finds nothing."""
        if (message := self._by_id.get(message_id)) is not None:
            message.content = None

    def finish(self) -> None:
        """Check that every number the rooms were raised by was used (else: a gap)."""
        if self._next != self._last:
            raise RuntimeError(f"room sequence numbers left unused: {self._next} != {self._last}")


class InsertRun:
    """A run of consecutive inserts: the rows to insert, then the results.

    Kept lean: it is the per-message cost of every chat message.
    """

    def __init__(self, plan: InsertPlan, ops: Sequence[InsertMessage]) -> None:
        self._plan = plan
        self._ops = ops
        #: The new messages' values, in the order of ``messages.INSERT_COLUMNS`` (and
        #: of seq); for a :attr:`plain` run only the seven of ``PLAIN_INSERT_COLUMNS``.
        self.rows: list[tuple[Any, ...]] = []
        #: No message of the run is a reply or mentions anyone.
        self.plain = not any(op.thread_id or op.mentions for op in ops)
        plain = self.plain
        # Per op: the index of its row if it is new, else the message it repeats.
        self._entries: list[int | _Message] = []
        # New messages with a client id, which later retries may refer to.
        self._keyed: list[tuple[int, _Message]] = []
        seqs, by_key = plan._next, plan._by_key
        for op in ops:
            client_id = op.client_msg_id
            if client_id is not None:
                known = by_key.get((op.user_id, client_id))
                if known is not None:
                    self._entries.append(known)
                    continue
            seq = seqs[op.room_id] = seqs[op.room_id] + 1
            index = len(self.rows)
            row = (op.room_id, op.user_id, op.content, op.kind, op.created_at, client_id, seq)
            self.rows.append(row if plain else (*row, op.thread_id, mentions_json(op.mentions)))
            self._entries.append(index)
            if client_id is not None:
                message = _Message(
                    op.room_id, op.user_id, op.content, op.kind, op.created_at, client_id, seq,
                    thread_id=op.thread_id, mentions=op.mentions,
                )  # fmt: skip
                by_key[(op.user_id, client_id)] = message
                self._keyed.append((index, message))

    def results(self, ids: Sequence[int]) -> list[Result]:
        """The results, given the ids :attr:`rows` were stored under (in that order)."""
        if len(ids) != len(self.rows):
            raise ValueError(f"{len(self.rows)} rows inserted, {len(ids)} ids")
        for index, message in self._keyed:
            message.id = ids[index]
            self._plan._by_id[message.id] = message
        results = []
        for op, entry in zip(self._ops, self._entries, strict=True):
            if isinstance(entry, int):
                results.append(
                    Result(
                        Outcome.DONE,
                        room_id=op.room_id,
                        message_id=ids[entry],
                        seq=self.rows[entry][6],
                    )
                )
            elif entry.content is None:  # stored, then deleted: it stays deleted
                results.append(Result(Outcome.NOT_FOUND, message_id=entry.id))
            elif entry.room_id != op.room_id:  # not a retry: the id was reused
                results.append(Result(Outcome.CONFLICT, message_id=entry.id))
            else:
                results.append(
                    Result(
                        Outcome.DONE,
                        room_id=entry.room_id,
                        message_id=entry.id,
                        duplicate_of=entry.chat(entry.content),
                        seq=entry.seq,
                    )
                )
        return results


def runs(ops: Iterable[Operation]) -> Iterator[list[InsertMessage] | Operation]:
    """The batch in order, consecutive inserts grouped (one statement stores a group)."""
    group: list[InsertMessage] = []
    for op in ops:
        if isinstance(op, InsertMessage):
            group.append(op)
            continue
        if group:
            yield group
            group = []
        yield op
    if group:
        yield group


def direct_key(first: str, second: str) -> str:
    """The key of the direct room of two users, the same whichever asks. The
    separator, the unit separator control character, cannot be part of a user
    id (PostgreSQL's text cannot hold NUL)."""
    return "\x1f".join(sorted((first, second)))
