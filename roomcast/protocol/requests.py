"""Client -> server payloads, and :data:`CLIENT_TYPES`, the envelope ``type`` of each."""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

import msgspec

from roomcast.protocol.errors import ErrorCode, ProtocolError
from roomcast.protocol.fields import MAX_ID, NULL, CallId, Id, MessageKind, SignalKind, Status
from roomcast.protocol.names import USER_ID_MAX_CHARS, UserId, checked_name, visible_name


class Request(msgspec.Struct, kw_only=True):
    """Base of every client payload. ``TYPE`` is the envelope ``type``."""

    TYPE: ClassVar[str]

    def claimed_users(self) -> tuple[str, ...]:
        """The user ids the payload names (each is checked against the connection)."""
        return ()


class ClaimsUser(Request, kw_only=True):
    """Payloads that may name their sender, as the seed clients do.

    The names are checked (:func:`visible_name`) and normalised when they are
    claimed, which every request is asked once, rather than in a
    ``__post_init__``: that would be a Python call in the decoding of every
    chat message, which hardly ever names its sender.
    """

    user_id: UserId | None = None
    from_user_id: UserId | None = None

    def claimed_users(self) -> tuple[str, ...]:
        """The named users, in NFC; :class:`ProtocolError` for a name that is not
        a user id."""
        if self.user_id is None and self.from_user_id is None:
            return ()
        claimed = []
        for field, name in (("user_id", self.user_id), ("from_user_id", self.from_user_id)):
            if name is not None:
                try:
                    claimed.append(visible_name(name, USER_ID_MAX_CHARS))
                except ValueError as exc:
                    raise ProtocolError(
                        ErrorCode.INVALID_MESSAGE, f"payload.{field}: {exc}", self.TYPE
                    ) from None
        return tuple(claimed)


class PingRequest(Request):
    TYPE = "ping"


class JoinRoomRequest(ClaimsUser):
    """Join a room; with ``since`` (the last message id seen), get what was missed first."""

    TYPE = "join_room"
    room_id: Id
    since: Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)] | None = None


class LeaveRoomRequest(ClaimsUser):
    TYPE = "leave_room"
    room_id: Id | None = None


#: The users a message may name in ``mentions``; the server keeps at most
#: :data:`MAX_MENTIONS` of them (members of the room, not the author).
Mentions = Annotated[tuple[UserId, ...], msgspec.Meta(max_length=100)]
MAX_MENTIONS: Final = 20


class ChatRequest(ClaimsUser):
    """Post a message. ``client_msg_id`` makes a retry safe: it is stored once.

    ``thread_id`` replies in the thread of that message of the room (a reply's
    thread is its root's); ``mentions`` are the users to notify, named
    explicitly: text that merely contains a name notifies nobody.
    """

    TYPE = "chat"
    room_id: Id
    content: str
    type: MessageKind = "text"
    client_msg_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    thread_id: Id | None = None
    mentions: Mentions = ()


class MessageEditRequest(ClaimsUser):
    """``mentions`` replaces the message's mentions; left out, they stay as they are."""

    TYPE = "message_edit"
    message_id: Id
    content: str
    mentions: Mentions | None = None


class MessageDeleteRequest(ClaimsUser):
    TYPE = "message_delete"
    message_id: Id


class MessageReactionRequest(ClaimsUser):
    TYPE = "message_reaction"
    message_id: Id
    # One short token: no spaces or control characters (normalised to NFC).
    emoji: Annotated[str, msgspec.Meta(pattern=r"^[^\s\x00-\x1f\x7f-\x9f]{1,32}(?![\s\S])")]


class ReadRequest(ClaimsUser):
    """Move the user's read marker in the room's timeline (or in a thread) to
    ``message_id``; a marker never moves back."""

    TYPE = "read"
    room_id: Id
    message_id: Id
    thread_id: Id | None = None


class NotificationReadRequest(ClaimsUser):
    TYPE = "notification_read"
    ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=100)]


class TypingRequest(ClaimsUser):
    TYPE = "typing"
    room_id: Id
    is_typing: bool


#: A status text's length, in characters.
STATUS_TEXT_MAX_CHARS: Final = 100


class PresenceRequest(ClaimsUser):
    """Choose a status (``online``: the automatic one again), with an optional
    text and a time (wall-clock ms) at which it ends by itself."""

    TYPE = "presence"
    status: Status
    status_text: Annotated[str, msgspec.Meta(max_length=STATUS_TEXT_MAX_CHARS)] | None = None
    until: Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)] | None = None


class ActivityRequest(ClaimsUser):
    """The person is using a client (input seen): ends automatic away. Clients
    send it when input follows a quiet spell, at most every few seconds."""

    TYPE = "activity"


#: The largest ``media`` of a ``webrtc`` message (JSON bytes): it is announced
#: to every device of the callee, and a description of the call needs no more.
MAX_MEDIA_BYTES: Final = 1024


class WebRTCRequest(ClaimsUser):
    """Signaling: an offer without ``call_id`` starts a call; everything else is relayed.

    ``data`` (SDP or ICE candidate) and ``media`` are opaque to the server and
    passed through byte for byte; only their size is limited.
    """

    TYPE = "webrtc"
    type: SignalKind
    to_user_id: UserId
    data: msgspec.Raw
    call_id: CallId | None = None
    # msgspec.Raw cannot be part of a union; JSON null is the "absent" value.
    # (A factory, because a Raw default cannot be written into the JSON schema.)
    media: msgspec.Raw = msgspec.field(default_factory=lambda: NULL)

    def __post_init__(self) -> None:
        self.to_user_id = checked_name(self.to_user_id, USER_ID_MAX_CHARS, "to_user_id")


class CallEndRequest(ClaimsUser):
    """Hang up (either party) or cancel a call that is still ringing (the caller)."""

    TYPE = "call_end"
    call_id: CallId


class CallRejectRequest(ClaimsUser):
    """Decline a ringing call (the callee)."""

    TYPE = "call_reject"
    call_id: CallId
    reason: Annotated[str, msgspec.Meta(max_length=200)] | None = None


CLIENT_TYPES: Final[dict[str, type[Request]]] = {
    cls.TYPE: cls
    for cls in (
        PingRequest,
        JoinRoomRequest,
        LeaveRoomRequest,
        ChatRequest,
        MessageEditRequest,
        MessageDeleteRequest,
        MessageReactionRequest,
        ReadRequest,
        NotificationReadRequest,
        TypingRequest,
        PresenceRequest,
        ActivityRequest,
        WebRTCRequest,
        CallEndRequest,
        CallRejectRequest,
    )
}
