"""HTTP request and response bodies (the REST side of the protocol)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from roomcast.protocol.events import RoomInfo, RoomUser
from roomcast.protocol.fields import MessageKind, Role
from roomcast.protocol.names import (
    ROOM_NAME_MAX_CHARS,
    TOPIC_MAX_CHARS,
    USER_ID_MAX_CHARS,
    RoomName,
    UserId,
    _field_error,
    checked_name,
    topic_text,
)


class CreateRoom(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/rooms`` body. The name and the members are kept in NFC."""

    name: RoomName
    private: bool = False
    members: Annotated[list[UserId], msgspec.Meta(max_length=1000)] = []

    def __post_init__(self) -> None:
        self.name = checked_name(self.name, ROOM_NAME_MAX_CHARS, "name")
        for index, member in enumerate(self.members):
            self.members[index] = checked_name(member, USER_ID_MAX_CHARS, f"members[{index}]")


class RoomPage(msgspec.Struct):
    """``GET /api/rooms``: rooms in id order; ``next`` is the ``after`` of the
    next page, ``null`` on the last one."""

    rooms: list[RoomInfo]
    next: int | None


class RoomMember(msgspec.Struct):
    user_id: str
    role: Role
    joined_at: int


class RoomMembersPage(msgspec.Struct):
    """``GET /api/rooms/{id}/members``: a room's members by user id, with their roles."""

    room_id: int
    members: list[RoomMember]
    next: str | None


class AddMember(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/rooms/{id}/members`` body."""

    user_id: UserId
    role: Role = Role.MEMBER

    def __post_init__(self) -> None:
        self.user_id = checked_name(self.user_id, USER_ID_MAX_CHARS, "user_id")


class SetRole(msgspec.Struct, forbid_unknown_fields=True):
    """``PUT /api/rooms/{id}/members/{user_id}/role`` body."""

    role: Role


class UpdateRoom(msgspec.Struct, forbid_unknown_fields=True):
    """``PATCH /api/rooms/{id}`` body: what is given changes."""

    name: RoomName | None = None
    topic: Annotated[str, msgspec.Meta(max_length=TOPIC_MAX_CHARS)] | None = None
    private: bool | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            self.name = checked_name(self.name, ROOM_NAME_MAX_CHARS, "name")
        if self.topic is not None:
            try:
                self.topic = topic_text(self.topic)
            except ValueError as exc:
                raise _field_error(exc, "topic") from None


class DirectRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/direct`` body: the other person."""

    user_id: UserId

    def __post_init__(self) -> None:
        self.user_id = checked_name(self.user_id, USER_ID_MAX_CHARS, "user_id")


class RoomUsersPage(msgspec.Struct, omit_defaults=True):
    """``GET /api/rooms/{id}/users``: the ``room_users`` payload, one page of it.

    ``next`` (the ``after`` of the next page) only when there is one, so that a
    room that fits one page answers exactly what the WebSocket frame says.
    """

    room_id: int
    users: list[RoomUser]
    next: str | None = None


class ThreadSummary(msgspec.Struct):
    """A thread under its root: live replies, the newest one's time and id, and
    the distinct authors of replies, newest first (at most 10)."""

    reply_count: int
    last_reply_at: int
    participants: list[str]
    last_reply_id: int


class HistoryMessage(msgspec.Struct):
    """A stored message in history: the ``chat`` payload plus its edits,
    reactions and, for a thread's root, the thread's summary.

    A deleted root stays in the timeline while its thread has replies, as a
    placeholder: empty ``content``, ``deleted_at`` set, no reactions.
    """

    id: int
    room_id: int
    user_id: str
    content: str
    type: MessageKind
    created_at: int
    edited_at: int | None
    reactions: dict[str, list[str]]
    thread_id: int | None = None
    mentions: list[str] = []
    thread: ThreadSummary | None = None
    deleted_at: int | None = None


class HistoryPage(msgspec.Struct):
    """``GET /api/rooms/{id}/messages``: oldest first. ``next_before`` is the
    ``before`` of the older page, ``next_after`` the ``after`` of the newer one
    (null when the page reaches the newest message, or for a ``before`` page)."""

    messages: list[HistoryMessage]
    next_before: int | None
    next_after: int | None = None


class FileThumbnail(msgspec.Struct):
    width: int
    height: int
    url: str


class FileInfo(msgspec.Struct):
    """An uploaded file, as ``POST /api/rooms/{id}/files`` answers it.
    ``content_type`` is what the bytes are (sniffed), ``sha256`` the hash of
    the bytes kept (an image's location is taken out of them); ``url`` and
    the thumbnails' are signed links that work in ``<img src>`` until they
    expire."""

    file_id: str
    name: str
    size: int
    content_type: str
    sha256: str
    url: str
    width: int | None = None
    height: int | None = None
    thumbnails: list[FileThumbnail] = msgspec.field(default_factory=list)


class SearchHit(msgspec.Struct):
    """A message found by ``GET /api/search``. ``rank`` is 2 when every term
    matched as a word (or the start of one), 1 when one needed a substring.
    ``snippet`` is the text around the first match, HTML-escaped, with each
    match in ``<mark>…</mark>`` (the only markup in it)."""

    message: HistoryMessage
    room_id: int
    rank: int
    snippet: str


class SearchPage(msgspec.Struct):
    """``count_estimate`` counts every hit up to 1,000 (and says 1000 beyond);
    ``next_cursor`` is the ``cursor`` of the next page, null on the last."""

    results: list[SearchHit]
    count_estimate: int
    next_cursor: str | None


class ThreadItem(msgspec.Struct):
    root: HistoryMessage
    thread: ThreadSummary


class ThreadPage(msgspec.Struct):
    """``GET /api/rooms/{id}/threads``: threads by last activity, newest first;
    ``next`` is the ``before`` of the next page."""

    threads: list[ThreadItem]
    next: int | None


class NotificationInfo(msgspec.Struct):
    """A stored notification (``read_at``: null while unread)."""

    id: int
    kind: str
    room_id: int
    message_id: int
    thread_id: int | None
    from_user_id: str
    excerpt: str
    created_at: int
    read_at: int | None


class NotificationPage(msgspec.Struct):
    """``GET /api/notifications``: newest first; ``next_before`` pages on."""

    notifications: list[NotificationInfo]
    next_before: int | None
