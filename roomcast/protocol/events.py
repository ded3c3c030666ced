"""Server -> client payloads, and :data:`SERVER_TYPES`, the envelope ``type`` of each."""

from __future__ import annotations

from typing import ClassVar, Final, Literal

import msgspec

from roomcast.protocol.errors import ErrorCode, ProtocolError
from roomcast.protocol.fields import CallEndReason, MessageKind, Role, SignalKind, Status


class Event(msgspec.Struct, omit_defaults=False):
    """Base of every server payload. ``TYPE`` is the envelope ``type``."""

    TYPE: ClassVar[str]


class Connected(Event):
    TYPE = "connected"
    connection_id: str
    user_id: str | None


class Error(Event, omit_defaults=True):
    TYPE = "error"
    code: ErrorCode
    message: str
    type: str | None = None
    retry_after_ms: int | None = None  # with rate_limited: when to try again
    client_msg_id: str | None = None  # the refused chat's own id, when it had one


class Pong(Event):
    TYPE = "pong"


class UserJoined(Event):
    TYPE = "user_joined"
    room_id: int
    user_id: str


class UserLeft(Event):
    TYPE = "user_left"
    room_id: int
    user_id: str


class RoomUser(msgspec.Struct, omit_defaults=True):
    """A user in a room: their status, its text when they set one, and when they
    were last active (wall-clock ms: a message sent or a client's ``activity``;
    left out until then)."""

    user_id: str
    status: Status
    status_text: str | None = None
    last_active_at: int | None = None


class RoomUsers(Event):
    TYPE = "room_users"
    room_id: int
    users: list[RoomUser]


class RoomInfo(msgspec.Struct):
    """A room. ``members`` (private rooms only) is complete when a room is
    created; in a room list it holds the first few by user id, and
    ``member_count`` says how many there are (page them with
    ``GET /api/rooms/{id}/members``)."""

    id: int
    name: str
    private: bool
    created_by: str | None
    created_at: int
    members: list[str]
    member_count: int
    topic: str = ""
    kind: Literal["room", "direct"] = "room"
    archived_at: int | None = None
    # The viewer's role in the room, in lists of the viewer's own rooms (``mine``).
    role: str | None = None


class RoomCreated(Event):
    """A room the user may see was created: public rooms are announced to every
    connected user, private ones to their members, so room lists stay live."""

    TYPE = "room_created"
    room: RoomInfo


class RoomUpdated(Event):
    """The room's settings changed (name, topic, private, archived)."""

    TYPE = "room_updated"
    room: RoomInfo


class MemberAdded(Event):
    """To the room and to the added user: ``user_id`` is a member now (``by`` added them)."""

    TYPE = "member_added"
    room_id: int
    user_id: str
    role: Role
    by: str


class MemberRemoved(Event):
    """To the room and to the user: ``user_id`` is no longer a member."""

    TYPE = "member_removed"
    room_id: int
    user_id: str
    by: str
    reason: Literal["left", "removed", "banned"]


class RoleChanged(Event):
    TYPE = "role_changed"
    room_id: int
    user_id: str
    role: Role
    by: str


class ChatMessage(Event, omit_defaults=True):
    """A stored chat message; ``client_msg_id`` only when the sender gave one.

    ``thread_id`` is the root of the thread it replies in (null: the room's
    timeline); ``mentions`` the users it notifies, as the server kept them.
    """

    TYPE = "chat"
    id: int
    room_id: int
    user_id: str
    content: str
    type: MessageKind
    created_at: int
    thread_id: int | None
    # A tuple, not a list: most messages mention nobody, and () costs nothing.
    mentions: tuple[str, ...]
    client_msg_id: str | None = None


class HistoryGap(Event):
    """After a ``join_room`` with ``since``: more was missed than is replayed.

    The replayed messages start at ``before``; fetch the older ones with
    ``GET /api/rooms/{room_id}/messages?before=<before>`` back to ``since``.
    """

    TYPE = "history_gap"
    room_id: int
    since: int
    before: int


class MessageEdited(Event):
    TYPE = "message_edit"
    message_id: int
    room_id: int
    content: str
    edited_at: int
    thread_id: int | None = None
    mentions: tuple[str, ...] = ()


class MessageDeleted(Event):
    """``by`` is who deleted it: its author, or one of the room's owners or moderators."""

    TYPE = "message_delete"
    message_id: int
    room_id: int
    by: str


class MessageReaction(Event):
    TYPE = "message_reaction"
    message_id: int
    room_id: int
    user_id: str
    emoji: str
    action: Literal["added", "removed"]


class ThreadUpdated(Event):
    """A thread's summary after one of its replies was stored, edited or deleted.
    ``reply_count`` 0: its replies are all deleted, and it is no longer listed."""

    TYPE = "thread_updated"
    room_id: int
    thread_id: int
    reply_count: int
    last_reply_at: int | None
    participants: list[str]


NotificationKind = Literal["mention", "reply"]


class Notification(Event):
    """To every connection of the notified user: they were mentioned, or someone
    replied in a thread they took part in. ``quiet``: the user is busy or in
    do-not-disturb, so clients show it without a sound."""

    TYPE = "notification"
    id: int
    kind: NotificationKind
    room_id: int
    message_id: int
    thread_id: int | None
    from_user_id: str
    excerpt: str
    created_at: int
    quiet: bool = False


class NotificationRetracted(Event):
    """The notification is void (its message was deleted, or an edit removed the mention)."""

    TYPE = "notification_retracted"
    id: int


class NotificationsRead(Event):
    """To every connection of the user: these notifications are read now."""

    TYPE = "notification_read"
    ids: list[int]


class ReadReceipt(Event):
    """A member's read marker moved (at most one per user and room per second)."""

    TYPE = "read_receipt"
    room_id: int
    user_id: str
    message_id: int
    thread_id: int | None


class RoomUnread(msgspec.Struct):
    """A room's counts for one user: ``unread`` timeline messages after their
    marker (not their own, not deleted; counting stops at
    :data:`UNREAD_COUNT_LIMIT`), ``mentions`` unread mentions of them (in the
    timeline and in threads)."""

    room_id: int
    unread: int
    mentions: int
    last_read_id: int
    last_message_id: int


#: Where counting unread messages stops (clients show "999+"), so that a
#: count costs the same after years of history.
UNREAD_COUNT_LIMIT: Final = 1000


class Unread(Event):
    """After ``connected``: every room of the user; later: the rooms whose counts changed."""

    TYPE = "unread"
    rooms: list[RoomUnread]


class Typing(Event):
    TYPE = "typing"
    room_id: int
    user_id: str
    is_typing: bool


class Presence(Event, omit_defaults=True):
    """A user's status changed; ``status_text`` and ``last_active_at`` as in ``room_users``."""

    TYPE = "presence"
    user_id: str
    status: Status
    status_text: str | None = None
    last_active_at: int | None = None


class _CallAnnouncement(Event):
    call_id: str
    from_user_id: str
    to_user_id: str
    media: msgspec.Raw


class IncomingCall(_CallAnnouncement):
    """To every connection of the callee: a call is ringing."""

    TYPE = "incoming_call"


class CallRinging(_CallAnnouncement):
    """To the caller's offering connection: the call exists and rings; here is its id."""

    TYPE = "call_ringing"


class WebRTCSignal(Event):
    """A relayed offer, answer or ICE candidate; ``data`` is untouched."""

    TYPE = "webrtc"
    type: SignalKind
    call_id: str
    from_user_id: str
    to_user_id: str
    data: msgspec.Raw


class CallActive(Event):
    """To both parties: the call was answered."""

    TYPE = "call_active"
    call_id: str
    from_user_id: str
    to_user_id: str


class CallEnded(Event, omit_defaults=True):
    """The call is over for this connection; ``reason`` says why, ``by`` who hung up."""

    TYPE = "call_ended"
    call_id: str
    reason: CallEndReason
    by: str | None = None


SERVER_TYPES: Final[dict[str, type[Event]]] = {
    cls.TYPE: cls
    for cls in (
        Connected,
        Error,
        Pong,
        UserJoined,
        UserLeft,
        RoomUsers,
        RoomCreated,
        RoomUpdated,
        MemberAdded,
        MemberRemoved,
        RoleChanged,
        ChatMessage,
        HistoryGap,
        MessageEdited,
        MessageDeleted,
        MessageReaction,
        ThreadUpdated,
        Notification,
        NotificationRetracted,
        NotificationsRead,
        ReadReceipt,
        Unread,
        Typing,
        Presence,
        IncomingCall,
        CallRinging,
        WebRTCSignal,
        CallActive,
        CallEnded,
    )
}


def error_event(exc: ProtocolError) -> Error:
    return Error(
        code=exc.code,
        message=exc.message,
        type=exc.type,
        retry_after_ms=exc.retry_after_ms,
        client_msg_id=exc.client_msg_id,
    )
