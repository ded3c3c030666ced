"""The wire protocol: every message type, defined once.

Every frame in either direction is a JSON text frame shaped
``{"type": str, "payload": object, "timestamp": int}``. This module is the only
place that turns bytes into typed messages and typed messages into bytes:

* :func:`decode_client` reads a client frame into one of the ``*Request``
  structs below, or raises :class:`ProtocolError` carrying the exact error code
  and a message naming the offending field.
* :func:`encode` turns a server payload struct into the bytes of a frame.

Decoding is two-step: the envelope is read with its ``payload`` kept as raw
JSON, then the payload is decoded by the struct registered for ``type``. Only
one JSON parse happens and msgspec reports the precise path of a bad field.
A client's ``timestamp`` is never trusted, so it is not decoded at all.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from array import array
from itertools import accumulate
from typing import Annotated, Any, ClassVar, Final, Literal, NoReturn

import msgspec

# -- shared field types ------------------------------------------------------

#: The largest id anywhere in the protocol: JavaScript's numbers hold integers
#: exactly only up to 2**53 - 1, so a browser's ``JSON.parse`` would round a
#: larger id to another room's.
MAX_ID: Final = 2**53 - 1
#: Database ids: positive and exact in JavaScript.
Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
#: User ids are opaque strings chosen by the identity provider. The pattern is
#: the part of the rule a JSON schema can say (1-64 characters, no control
#: characters); :func:`visible_name` is the whole rule, applied wherever a user
#: id enters. (The lookahead ends the string in Python and in JSON Schema's
#: ECMA-262 regexes alike; ``$`` would let a trailing newline through in Python.)
USER_ID_MAX_CHARS: Final = 64
USER_ID_PATTERN: Final = r"^[^\x00-\x1f\x7f]{1,64}(?![\s\S])"
UserId = Annotated[str, msgspec.Meta(pattern=USER_ID_PATTERN)]
ROOM_NAME_MAX_CHARS: Final = 100
RoomName = Annotated[str, msgspec.Meta(min_length=1, max_length=ROOM_NAME_MAX_CHARS)]

#: What a name (a user id, a room name) may not contain: control characters
#: (Cc), format characters (Cf: zero-width spaces and joiners, bidi marks,
#: embeddings, overrides and isolates, word joiners, the BOM, ...), line and
#: paragraph separators (Zl, Zp) and lone surrogates (Cs). Each can make one
#: name show as another (``"\u202eecila"`` shows as "alice") or as nothing.
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
#: Characters that show as nothing although they are no format characters
#: (Unicode's other default-ignorable code points: the combining grapheme
#: joiner, Hangul fillers, Khmer inherent vowels, Mongolian and other variation
#: selectors, tags) and code points reserved as such: ``"ali\u034fce"`` would
#: show as "alice". A variation selector is allowed right after a symbol
#: (``"\u2764\ufe0f"``) or in a keycap (``"1\ufe0f\u20e3"``), where it picks
#: how an emoji looks.
_INVISIBLE: Final = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2065\u3164\ufe00-\ufe0f"
    "\uffa0\ufff0-\ufff8\U000e0000-\U000e0fff]"
)
#: A character that shows as an empty space (the blank Braille pattern): a name
#: of only these and whitespace is blank.
_BLANK_LETTERS: Final = frozenset("\u2800")


def visible_name(text: str, max_chars: int) -> str:
    """``text`` in NFC, if it is fit to show as a name; else :class:`ValueError`
    saying why (without the field's name, which the caller knows).

    NFC, so that two spellings of one name (``"e\u0301"`` and ``"\u00e9"``) are
    one user or one room. Unassigned code points are allowed: they are mostly
    emoji newer than this Python's Unicode tables.
    """
    # NFC makes a text at most three times as long or short: a far longer one
    # is refused before the work of normalising it.
    if not text.isascii() and len(text) <= 4 * max_chars:
        text = unicodedata.normalize("NFC", text)
    if text and all(char.isspace() or char in _BLANK_LETTERS for char in text):
        raise ValueError("must not be blank")
    text = text.strip()  # spaces around a name show as nothing: "alice " is alice
    if not 1 <= len(text) <= max_chars:
        raise ValueError(f"expected 1-{max_chars} characters")
    if not text.isprintable():  # rare: only then look at each character
        for index, char in enumerate(text):
            category = unicodedata.category(char)
            if category in _HIDDEN_CATEGORIES and not _joins_emoji(text, index):
                _refuse_hidden(char, "control" if category == "Cc" else "invisible or bidi control")
    if not text.isascii():
        for found in _INVISIBLE.finditer(text):
            if not _selects_emoji(text, found.start()):
                _refuse_hidden(found.group(), "invisible")
    return text


def _refuse_hidden(char: str, kind: str) -> NoReturn:
    raise ValueError(f"must not contain {kind} characters (U+{ord(char):04X})")


def _selects_emoji(text: str, index: int) -> bool:
    """Whether ``text[index]`` is a variation selector choosing how the symbol
    before it looks (❤️), or in a keycap (1️⃣)."""
    if text[index] not in "\ufe0e\ufe0f" or index == 0:
        return False
    keycap = text[index + 1 : index + 2] == "\u20e3"
    return keycap or unicodedata.category(text[index - 1]) in ("So", "Sk")


def _joins_emoji(text: str, index: int) -> bool:
    """Whether ``text[index]`` is a zero-width joiner inside an emoji sequence
    (👩‍💻, 🏳️‍🌈): between two symbols it hides nothing, while between letters
    (``"al\u200dice"``) it would make one name look like another."""
    if text[index] != "\u200d" or index == 0 or index + 1 == len(text):
        return False
    before = text[index - 1]
    if before == "\ufe0f" and index > 1:  # an emoji's variation selector
        before = text[index - 2]
    return (
        unicodedata.category(before) in ("So", "Sk")
        and unicodedata.category(text[index + 1]) == "So"
    )


def _field_error(why: ValueError, path: str) -> ValueError:
    """A ``__post_init__`` refusal in msgspec's own words, so :func:`_describe`
    names the field as it does for msgspec's checks (``payload.to_user_id: ...``)."""
    return ValueError(f"{why} - at `$.{path}`")


Status = Literal["online", "away", "busy", "offline"]
#: Call ids are created by the server; clients echo them back.
CallId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
SignalKind = Literal["offer", "answer", "ice_candidate"]
#: The raw JSON ``null``, for opaque fields that were not given.
NULL: Final = msgspec.Raw(b"null")
CallEndReason = Literal[
    "rejected",
    "ended",
    "no_answer",
    "unavailable",
    "busy",
    "glare",
    "disconnected",
    "answered_elsewhere",
]
MessageKind = Literal["text"]


class ErrorCode(enum.StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A request that is answered with an ``error`` frame.

    ``type`` is the offending message type when it is known, so a client can
    tell which of its requests failed.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        type: str | None = None,
        retry_after_ms: int | None = None,
        client_msg_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.type = type
        self.retry_after_ms = retry_after_ms
        self.client_msg_id = client_msg_id


# -- client -> server ------------------------------------------------------------


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


class ChatRequest(ClaimsUser):
    """Post a message. ``client_msg_id`` makes a retry safe: it is stored once."""

    TYPE = "chat"
    room_id: Id
    content: str
    type: MessageKind = "text"
    client_msg_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


class MessageEditRequest(ClaimsUser):
    TYPE = "message_edit"
    message_id: Id
    content: str


class MessageDeleteRequest(ClaimsUser):
    TYPE = "message_delete"
    message_id: Id


class MessageReactionRequest(ClaimsUser):
    TYPE = "message_reaction"
    message_id: Id
    # One short token: no spaces or control characters (normalised to NFC).
    emoji: Annotated[str, msgspec.Meta(pattern=r"^[^\s\x00-\x1f\x7f-\x9f]{1,32}(?![\s\S])")]


class TypingRequest(ClaimsUser):
    TYPE = "typing"
    room_id: Id
    is_typing: bool


class PresenceRequest(ClaimsUser):
    TYPE = "presence"
    status: Status


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
        try:
            self.to_user_id = visible_name(self.to_user_id, USER_ID_MAX_CHARS)
        except ValueError as exc:
            raise _field_error(exc, "to_user_id") from None


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
        TypingRequest,
        PresenceRequest,
        WebRTCRequest,
        CallEndRequest,
        CallRejectRequest,
    )
}


# -- server -> client ------------------------------------------------------------


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


class RoomUser(msgspec.Struct):
    user_id: str
    status: Status


class RoomUsers(Event):
    TYPE = "room_users"
    room_id: int
    users: list[RoomUser]


class ChatMessage(Event, omit_defaults=True):
    """A stored chat message; ``client_msg_id`` only when the sender gave one."""

    TYPE = "chat"
    id: int
    room_id: int
    user_id: str
    content: str
    type: MessageKind
    created_at: int
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


class MessageDeleted(Event):
    TYPE = "message_delete"
    message_id: int
    room_id: int


class MessageReaction(Event):
    TYPE = "message_reaction"
    message_id: int
    room_id: int
    user_id: str
    emoji: str
    action: Literal["added", "removed"]


class Typing(Event):
    TYPE = "typing"
    room_id: int
    user_id: str
    is_typing: bool


class Presence(Event):
    TYPE = "presence"
    user_id: str
    status: Status


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
        ChatMessage,
        HistoryGap,
        MessageEdited,
        MessageDeleted,
        MessageReaction,
        Typing,
        Presence,
        IncomingCall,
        CallRinging,
        WebRTCSignal,
        CallActive,
        CallEnded,
    )
}


# -- decoding --------------------------------------------------------------------


class _Envelope(msgspec.Struct):
    type: Annotated[str, msgspec.Meta(max_length=64)]
    payload: msgspec.Raw = msgspec.Raw(b"{}")


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_payload_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(cls) for name, cls in CLIENT_TYPES.items()
}
_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _describe(error: msgspec.ValidationError, root: str) -> str:
    """Rewrite msgspec's message so the path starts at ``root`` (e.g. ``payload``)."""
    text = str(error)
    match = _PATH.search(text)
    if match is None:
        return f"{root}: {text[0].lower()}{text[1:]}"
    return f"{root}{match['path']}: {text[: match.start()][0].lower()}{text[1 : match.start()]}"


#: Deepest nesting of JSON arrays and objects accepted from a client, a frame's
#: envelope (or an HTTP body's top level) counting as one level; deeper is
#: ``invalid_message``. Every message the protocol defines needs 3 or 4 levels and
#: an SDP or ICE ``data`` 1 or 2, so 32 leaves room for any real payload. Bounded
#: because a recursive decoder needs stack for each level: about 990 levels (2 KB
#: of brackets) overflow Python's recursion limit, in msgspec or in any later
#: decode of the same bytes inside a larger document (a cluster's log record).
MAX_JSON_DEPTH: Final = 32

# Objects spelled as arrays, and nothing kept but brackets and quotes.
_AS_ARRAYS: Final = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE: Final = bytes(set(range(256)) - set(b'"[]{}'))
_STEPS: Final = bytes.maketrans(b"[]", b"\x01\xff")  # +1 and -1 as signed bytes


def _structure(data: bytes) -> bytes:
    """The brackets of ``data`` that are not inside strings, objects spelled ``[]``.

    Escaped backslashes, then escaped quotes, are removed first, so that every
    quote left opens or closes a string; two quotes in a row (an empty string, or
    one string ending where the next begins) hide nothing and go too.
    """
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = unescaped.translate(_AS_ARRAYS, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' not in kept:
        return kept
    return b"".join(kept.split(b'"')[::2])  # even pieces are outside strings


def _nested_deeper(data: bytes, limit: int) -> bool:
    """Whether ``data`` opens more than ``limit`` arrays/objects at once.

    Only C-speed passes over the brackets: each ``replace`` removes every
    innermost pair, so after ``k`` passes an opener still there has more than
    ``k`` levels inside it or is never closed, and a run of ``limit + 1 - k`` of
    them is too deep; openers left that could not reach the limit, or a pass that
    removes nothing (closers then openers: malformed), are not. Shapes that
    shrink slowly (many long chains) end with one exact prefix-sum instead, so
    the work stays a few passes over the frame. Malformed JSON is never judged
    shallower than a decoder would find it before its first error; which
    refusal it gets is all that depends on this.
    """
    brackets = _structure(data)
    budget = 3 * len(brackets)
    for removed in range(limit + 1):
        if brackets.count(b"[") <= limit - removed:
            return False
        if b"[" * (limit + 1 - removed) in brackets:
            return True
        budget -= len(brackets)
        if budget < 0:
            steps = array("b", brackets.translate(_STEPS))
            return removed + max(accumulate(steps)) > limit
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            return False
        brackets = inner
    return True  # unreachable: at removed == limit, any opener left is a run of 1


#: Without a ``[``, each level past the first is an object that is a value in
#: another, which takes at least four characters (``{"":``), well formed or not:
#: a text this short cannot nest deeper than the limit.
_SHALLOW_WITHOUT_ARRAYS: Final = 4 * MAX_JSON_DEPTH
_OPEN_BRACKET: Final = ord("[")


def check_json_depth(data: bytes | str, root: str) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH`, before any decoder sees it.

    On the path of every frame, so the common case is cheap: most frames have no
    ``[``, and one without is shallow enough when it is short (see
    :data:`_SHALLOW_WITHOUT_ARRAYS`) or has few ``{``; JSON with no more openers
    than the limit cannot be deeper. Only a frame with more is scanned, and
    brackets inside strings do not count.
    """
    if isinstance(data, str):
        if "[" not in data:
            if len(data) <= _SHALLOW_WITHOUT_ARRAYS or data.count("{") <= MAX_JSON_DEPTH:
                return
        elif data.count("{") + data.count("[") <= MAX_JSON_DEPTH:
            return
        raw = data.encode("utf-8", "surrogatepass")
    else:
        if _OPEN_BRACKET not in data:  # an int: a memchr, where b"[" is a slow search
            if len(data) <= _SHALLOW_WITHOUT_ARRAYS or data.count(b"{") <= MAX_JSON_DEPTH:
                return
        elif data.count(b"{") + data.count(b"[") <= MAX_JSON_DEPTH:
            return
        raw = bytes(data)
    if _nested_deeper(raw, MAX_JSON_DEPTH):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"{root}: JSON nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects",
        )


def decode_client(data: bytes | str) -> Request:
    """Decode one client frame, or raise :class:`ProtocolError`."""
    check_json_depth(data, "message")
    try:
        envelope = _envelope_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, _describe(exc, "message")) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"invalid JSON: {exc}") from None
    decoder = _payload_decoders.get(envelope.type)
    if decoder is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown message type {envelope.type!r}", envelope.type
        )
    try:
        request: Request = decoder.decode(envelope.payload)
    except msgspec.ValidationError as exc:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, _describe(exc, "payload"), envelope.type
        ) from None
    return request


# -- encoding --------------------------------------------------------------------


class _OutEnvelope(msgspec.Struct):
    type: str
    payload: Event
    timestamp: int


_encoder = msgspec.json.Encoder()


def encode(event: Event, timestamp_ms: int) -> bytes:
    """The JSON bytes of one server frame carrying ``event``."""
    return _encoder.encode(_OutEnvelope(event.TYPE, event, timestamp_ms))


class _RequestEnvelope(msgspec.Struct, omit_defaults=True):
    type: str
    payload: Request


def encode_request(request: Request) -> bytes:
    """A decoded request as a client frame again: exactly its fields, nothing the
    client padded it with (server nodes hand requests on to each other)."""
    return _encoder.encode(_RequestEnvelope(request.TYPE, request))


def error_event(exc: ProtocolError) -> Error:
    return Error(
        code=exc.code,
        message=exc.message,
        type=exc.type,
        retry_after_ms=exc.retry_after_ms,
        client_msg_id=exc.client_msg_id,
    )


# -- HTTP bodies -------------------------------------------------------------------


class CreateRoom(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/rooms`` body. The name and the members are kept in NFC."""

    name: RoomName
    private: bool = False
    members: Annotated[list[UserId], msgspec.Meta(max_length=1000)] = []

    def __post_init__(self) -> None:
        try:
            self.name = visible_name(self.name, ROOM_NAME_MAX_CHARS)
        except ValueError as exc:
            raise _field_error(exc, "name") from None
        for index, member in enumerate(self.members):
            try:
                self.members[index] = visible_name(member, USER_ID_MAX_CHARS)
            except ValueError as exc:
                raise _field_error(exc, f"members[{index}]") from None


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


class RoomPage(msgspec.Struct):
    """``GET /api/rooms``: rooms in id order; ``next`` is the ``after`` of the
    next page, ``null`` on the last one."""

    rooms: list[RoomInfo]
    next: int | None


class RoomMembersPage(msgspec.Struct):
    """``GET /api/rooms/{id}/members``: a private room's members by user id."""

    room_id: int
    members: list[str]
    next: str | None


class RoomUsersPage(msgspec.Struct, omit_defaults=True):
    """``GET /api/rooms/{id}/users``: the ``room_users`` payload, one page of it.

    ``next`` (the ``after`` of the next page) only when there is one, so that a
    room that fits one page answers exactly what the WebSocket frame says.
    """

    room_id: int
    users: list[RoomUser]
    next: str | None = None


class HistoryMessage(msgspec.Struct):
    """A stored message in history: the ``chat`` payload plus its edits and reactions."""

    id: int
    room_id: int
    user_id: str
    content: str
    type: MessageKind
    created_at: int
    edited_at: int | None
    reactions: dict[str, list[str]]


class HistoryPage(msgspec.Struct):
    messages: list[HistoryMessage]
    next_before: int | None


def decode_body(data: bytes, cls: type[msgspec.Struct]) -> Any:
    """Decode an HTTP JSON body, raising :class:`ProtocolError` like a frame would."""
    check_json_depth(data, "body")
    try:
        return msgspec.json.decode(data, type=cls)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, _describe(exc, "body")) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"invalid JSON: {exc}") from None


def encode_json(value: Any) -> bytes:
    """JSON bytes of any protocol value (HTTP responses)."""
    return _encoder.encode(value)
