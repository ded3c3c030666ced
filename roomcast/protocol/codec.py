"""Bytes to typed messages and back: the only place either happens.

* :func:`decode_client` reads a client frame into one of the ``*Request``
  structs, or raises :class:`ProtocolError` carrying the exact error code and a
  message naming the offending field; :func:`decode_body` does the same for an
  HTTP body.
* :func:`encode` turns a server payload struct into the bytes of a frame.

Decoding is two-step: the envelope is read with its ``payload`` kept as raw
JSON, then the payload is decoded by the struct registered for ``type``. Only
one JSON parse happens and msgspec reports the precise path of a bad field.
A client's ``timestamp`` is never trusted, so it is not decoded at all. Every
input is first checked not to nest too deep for a recursive decoder.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Annotated, Any, Final

import msgspec

from roomcast.protocol.errors import ErrorCode, ProtocolError
from roomcast.protocol.events import Event
from roomcast.protocol.requests import CLIENT_TYPES, Request

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


def decode_body(data: bytes, cls: type[msgspec.Struct]) -> Any:
    """Decode an HTTP JSON body, raising :class:`ProtocolError` like a frame would."""
    check_json_depth(data, "body")
    try:
        return msgspec.json.decode(data, type=cls)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, _describe(exc, "body")) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"invalid JSON: {exc}") from None


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


def encode_json(value: Any) -> bytes:
    """JSON bytes of any protocol value (HTTP responses)."""
    return _encoder.encode(value)
