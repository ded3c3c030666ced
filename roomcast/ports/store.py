"""The storage port: what the server needs from a database.

Writes that happen per message (chat, edit, delete, reaction) are *operations*
submitted to a group committer: many of them share one transaction, and each
caller learns its own result once that transaction is committed. This keeps
the "broadcast only what is committed" rule without one commit per message.
Adapters (SQLite for one process, PostgreSQL for several) implement :class:`Store`.

Every message also gets a *room sequence number*: 1, 2, 3, ... per room,
assigned in the transaction that stores it. Ids are unique across rooms but
leave gaps within one; the sequence has none, so a receiver that sees seq 7
after seq 5 knows it missed one and can fetch it (:meth:`Store.messages_in_seq_range`),
even when several server processes write to the same room.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from roomcast.core.call_state import CallRecord
from roomcast.core.search import Query, SearchFilters
from roomcast.ports.group_commit import Done
from roomcast.protocol import (
    ChatMessage,
    HistoryMessage,
    Notification,
    NotificationInfo,
    RoomUnread,
    ThreadItem,
    ThreadUpdated,
)

# -- records -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Room:
    """A room. ``members`` (only kept for private rooms) is every member, except
    in :meth:`Store.list_rooms`, which lists the first few: there ``admits``
    must not be asked, and ``member_count`` is the whole count."""

    id: int
    name: str
    private: bool
    created_by: str | None
    created_at: int
    members: tuple[str, ...] = ()
    # The sequence number of the room's newest message (0: none yet).
    last_seq: int = 0
    member_count: int = 0
    topic: str = ""
    kind: str = "room"  # or "direct": two members, nothing to run
    archived_at: int | None = None  # archived: readable by members, closed to posts

    def admits(self, user_id: str | None) -> bool:
        return not self.private or (user_id is not None and user_id in self.members)

    @property
    def direct(self) -> bool:
        return self.kind == "direct"


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    role: str
    joined_at: int


@dataclass(frozen=True, slots=True)
class MemberState:
    """A user's standing in a room: their membership (None: not a member) and ban."""

    member: Member | None
    banned: bool


@dataclass(frozen=True, slots=True)
class MemberChange:
    """What a membership write did: ``changed`` when it changed anything;
    ``member`` is the membership as it now is (or was, for a removal);
    ``last_owner`` when it was refused to keep the room an owner."""

    changed: bool
    member: Member | None
    last_owner: bool = False


@dataclass(frozen=True, slots=True)
class Thumbnail:
    width: int
    height: int
    blob: str
    size: int


@dataclass(frozen=True, slots=True)
class FileRecord:
    """An uploaded file: its room, uploader, safe name, sniffed type, the blob
    of its bytes, an image's size and thumbnails, and the message that
    attached it (None: not attached yet)."""

    id: str
    room_id: int
    uploader: str
    name: str
    size: int
    content_type: str
    blob: str
    created_at: int
    width: int | None = None
    height: int | None = None
    thumbnails: tuple[Thumbnail, ...] = ()
    message_id: int | None = None


@dataclass(frozen=True, slots=True)
class CallsAfter:
    """A position in a user's call list (newest first): the calls after it are
    those that started earlier, or at the same time with a greater id."""

    started_at: int
    call_id: str


# -- operations (group-committed writes) --------------------------------------------


class InsertMessage(msgspec.Struct, frozen=True, gc=False):
    room_id: int
    user_id: str
    content: str
    kind: str
    created_at: int
    client_msg_id: str | None = None
    # The thread's root (checked to be a live message of the room), or None.
    thread_id: int | None = None
    # The users named to notify; the store keeps the room's members among them.
    mentions: tuple[str, ...] = ()


class EditMessage(msgspec.Struct, frozen=True, gc=False):
    message_id: int
    user_id: str
    # The rooms the acting connection is in; a message elsewhere is forbidden.
    rooms: frozenset[int]
    content: str
    edited_at: int
    # The message's new mentions (None: keep them).
    mentions: tuple[str, ...] | None = None


class DeleteMessage(msgspec.Struct, frozen=True, gc=False):
    message_id: int
    user_id: str
    # The rooms the acting connection is in; a message elsewhere is forbidden.
    rooms: frozenset[int]
    deleted_at: int


class ToggleReaction(msgspec.Struct, frozen=True, gc=False):
    message_id: int
    user_id: str
    # The rooms the acting connection is in; a message elsewhere is forbidden.
    rooms: frozenset[int]
    emoji: str
    created_at: int


class MarkRead(msgspec.Struct, frozen=True, gc=False):
    """Move ``user_id``'s read marker in the room's timeline (``thread_id`` None)
    or in a thread forward to ``message_id``, and mark read the notifications
    it passes."""

    user_id: str
    room_id: int
    thread_id: int | None
    message_id: int
    read_at: int


class ReadNotifications(msgspec.Struct, frozen=True, gc=False):
    user_id: str
    ids: tuple[int, ...]
    read_at: int


class ProbeWrite(msgspec.Struct, frozen=True, gc=False):
    """Rewrite the one row of ``write_probe``: whether writes commit again after
    failures, known without waiting for a user's message (see ``/health``)."""

    written_at: int


#: A call snapshot from the core is stored as is (insert or update by id).
Operation = (
    InsertMessage
    | EditMessage
    | DeleteMessage
    | ToggleReaction
    | MarkRead
    | ReadNotifications
    | CallRecord
    | ProbeWrite
)


class Outcome(enum.Enum):
    DONE = "done"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    CONFLICT = "conflict"  # a client_msg_id already used for a message elsewhere
    ARCHIVED = "archived"  # the message's room takes no changes


class Result(msgspec.Struct, frozen=True, gc=False):
    """What an operation did. ``room_id`` is set when the message was found."""

    outcome: Outcome
    room_id: int = 0
    message_id: int = 0
    added: bool = False  # ToggleReaction: added (True) or removed (False)
    # InsertMessage retried with a known client_msg_id: the message stored before.
    duplicate_of: ChatMessage | None = None
    # InsertMessage: the message's room sequence number (0 when no message was stored).
    seq: int = 0
    # Insert, edit: the mentions kept (members of the room, not the author).
    mentions: tuple[str, ...] = ()
    # Insert, edit: the notifications made, each with the user it is for.
    notified: tuple[tuple[str, Notification], ...] = ()
    # Edit, delete: the notifications taken back, as (user, notification id).
    retracted: tuple[tuple[str, int], ...] = ()
    # A reply stored, edited or deleted: its thread's summary now.
    thread: ThreadUpdated | None = None
    # MarkRead, ReadNotifications: the notifications now read, as (id, room id).
    read: tuple[tuple[int, int], ...] = ()
    # The message's thread (its root's id), for an edit or a delete of a reply.
    thread_id: int | None = None


class SequencedMessage(msgspec.Struct, frozen=True, gc=False):
    """A stored message with its room sequence number."""

    seq: int
    message: ChatMessage


class StoreUnavailable(Exception):
    """The database could not be reached or refused the transaction."""


class RoomLimitReached(Exception):
    """The user has created as many rooms as they may; nothing was created."""

    def __init__(self, user_id: str, limit: int) -> None:
        super().__init__(f"user {user_id!r} has created {limit} rooms, the most allowed")
        self.user_id = user_id
        self.limit = limit


class Store(Protocol):
    async def start(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None:
        """Commit every submitted operation, then disconnect."""

    def submit(self, op: Operation, done: Done[Result]) -> None:
        """Queue ``op`` for the next group commit; ``done`` runs, in order, once committed."""

    def run(self, op: Operation) -> asyncio.Future[Result]:
        """Queue ``op``; the future resolves once committed (for callers off the hot path)."""

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""

    async def get_room(self, room_id: int) -> Room | None: ...

    async def ensure_room(
        self, room_id: int, created_by: str, now: int, max_rooms: int | None = None
    ) -> Room:
        """The room with this id, created as a public room if it does not exist.

        A room created here counts against ``created_by``'s ``max_rooms``
        (``None``: no limit); past it :class:`RoomLimitReached` is raised and
        nothing is created. An existing room is returned whoever asks.
        """

    async def create_room(
        self,
        name: str,
        private: bool,
        members: tuple[str, ...],
        created_by: str | None,
        now: int,
        max_rooms: int | None = None,
    ) -> Room:
        """A new room, numbered by the store (never above ``protocol.MAX_ID``).

        It counts against ``created_by``'s ``max_rooms`` as in :meth:`ensure_room`.
        """

    async def list_rooms(
        self,
        user_id: str | None,
        after: int = 0,
        limit: int = 100,
        name_contains: str | None = None,
        members_limit: int = 20,
        mine: bool = False,
    ) -> list[Room]:
        """Up to ``limit`` rooms with ids above ``after``, in id order: public
        rooms and the private rooms ``user_id`` belongs to (with ``mine``: only
        the rooms, public or private, ``user_id`` is a member of), whose name
        contains ``name_contains`` (ASCII letters in either case) when it is given.

        Each private room lists its first ``members_limit`` members by user id.
        """

    # -- membership (see adapters/sql/members.py) ---------------------------------

    # -- files (see adapters/sql/files.py) -------------------------------------------

    async def add_file(self, record: FileRecord) -> None:
        """Keep an uploaded file's record (its blobs are stored already)."""

    async def file(self, file_id: str) -> FileRecord | None: ...

    async def uploads_since(self, user_id: str, since: int) -> tuple[int, int]:
        """How many files ``user_id`` uploaded from ``since`` on, and the bytes
        of every file of theirs that is kept (for the quota)."""

    async def unattached_files(self, before: int, limit: int) -> list[str]:
        """Files uploaded before ``before`` that no message attached, oldest first."""

    async def unused_blobs(self, blobs: Sequence[str]) -> list[str]:
        """Those of ``blobs`` that no file or thumbnail names."""

    async def delete_files(self, file_ids: Sequence[str]) -> list[str]:
        """Remove these files' records; the blobs no file or thumbnail names
        any more (the caller deletes them once this has committed)."""

    async def member_state(self, room_id: int, user_id: str) -> MemberState: ...

    async def members_page(self, room_id: int, after: str | None, limit: int) -> list[Member]:
        """Members by user id (code point order), those after ``after``."""

    async def join_public(self, room_id: int, user_id: str, now: int) -> MemberState:
        """Record a public room's joiner as a member, once; a banned user is not."""

    async def add_member(self, room_id: int, user_id: str, role: str, now: int) -> MemberChange: ...

    async def remove_member(
        self, room_id: int, user_id: str, ban_by: str | None, now: int
    ) -> MemberChange:
        """Remove (and, with ``ban_by``, ban); never the room's last owner."""

    async def unban(self, room_id: int, user_id: str) -> bool: ...

    async def set_role(self, room_id: int, user_id: str, role: str) -> MemberChange:
        """Never leaves the room without an owner."""

    async def update_room(
        self, room_id: int, name: str | None, topic: str | None, private: bool | None
    ) -> Room | None:
        """Change what is given (None: keep it); None when the room is archived or gone."""

    async def archive_room(self, room_id: int, now: int) -> Room | None: ...

    async def direct_room(self, first: str, second: str, now: int) -> Room:
        """The one direct room of the two users, created on first use."""

    async def roles(self, user_id: str, room_ids: Sequence[int]) -> dict[int, str]: ...

    async def list_calls(
        self, user_id: str, limit: int, after: CallsAfter | None = None
    ) -> list[CallRecord]:
        """The user's calls (as caller or callee), newest first, from after ``after``."""

    async def history(
        self,
        room_id: int,
        before: int | None,
        limit: int,
        thread_id: int | None = None,
        after: int | None = None,
    ) -> list[HistoryMessage]:
        """Up to ``limit`` messages with ids below ``before`` (or, given
        ``after``, the first ones above it), oldest first: the room's timeline
        (live messages and deleted roots of live threads, roots with their
        thread's summary), or with ``thread_id`` that thread's live replies."""

    # -- search (see adapters/sql/search.py) --------------------------------------

    async def search(
        self,
        viewer: str,
        query: Query,
        filters: SearchFilters,
        tier: str,
        below: int | None,
        limit: int,
    ) -> list[tuple[HistoryMessage, str]]:
        """Up to ``limit`` live messages that match ``query`` and ``filters`` in
        rooms ``viewer`` may read now, of the ``tier`` (a :class:`Tier`), ids
        below ``below``, newest first; each with its search document."""

    async def search_count(
        self, viewer: str, query: Query, filters: SearchFilters, cap: int
    ) -> int:
        """How many messages :meth:`search` would find in all, counted up to ``cap``."""

    # -- conversations (see adapters/sql/conversations.py) ------------------------

    async def thread_root(self, room_id: int, message_id: int) -> int | None:
        """The root of the thread a reply to ``message_id`` belongs to (the
        message itself, or its own root); None unless it is a live message of the room."""

    async def threads(self, room_id: int, before: int | None, limit: int) -> list[ThreadItem]:
        """The room's threads with live replies, by last activity (their newest
        reply's id), newest first, those whose newest reply is before ``before``."""

    async def unread(self, user_id: str, room_ids: Sequence[int] | None = None) -> list[RoomUnread]:
        """The user's counts in each room they are a member of (or in ``room_ids`` of them)."""

    async def notifications(
        self, user_id: str, unread_only: bool, before: int | None, limit: int
    ) -> list[NotificationInfo]:
        """The user's notifications, newest first, with ids below ``before``."""

    async def messages_in_seq_range(
        self, room_id: int, after_seq: int, through_seq: int
    ) -> list[SequencedMessage]:
        """The room's live messages with ``after_seq < seq <= through_seq``, in seq order.

        For filling a gap a receiver noticed; a deleted message is simply absent.
        """

    async def messages_since(
        self, room_id: int, since_id: int, through_seq: int | None, limit: int
    ) -> tuple[list[SequencedMessage], bool]:
        """The newest ``limit`` live messages with ids above ``since_id``, oldest first.

        ``through_seq`` (when given) leaves out what a caller will receive
        live anyway. The flag tells whether older ones were left out. The
        read is not ordered with the group commit.
        """
