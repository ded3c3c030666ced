"""RFC 6455 WebSocket framing, server side, without I/O.

:class:`FrameReader` takes the bytes a client sent, in whatever pieces they
arrived, and returns whole events: a text or binary message (fragments
reassembled), a ping, a pong, a close, or a :class:`Violation` after which
the connection must be closed with the violation's code. It reads nothing
from a socket and writes nothing; the asyncio side
(:mod:`roomcast.transport.websocket`) feeds it and acts on the events, and
the tests feed it bytes directly.

Why roomcast reads frames itself: a chat server receives many small
frames, and a library that hands each one to a per-connection task pays a
task switch per message. Parsing in the protocol's ``data_received`` and
handing the message straight to the node costs a few microseconds and
no task at all. The server-to-client side is just as small:
:func:`text_frame`, :func:`control_frame` and :func:`close_frame` build
unmasked frames once, which the corked fan-out writes to every recipient.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013

#: Most frames one message may arrive in: empty fragments cost no payload
#: bytes, so without a count a client could grow one message forever.
MAX_FRAGMENTS = 1024

#: Close codes a peer may send (RFC 6455 section 7.4; 1004-1006 and 1015 are never sent).
_VALID_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


@dataclass(slots=True)
class Text:
    data: str


@dataclass(slots=True)
class Binary:
    data: bytes


@dataclass(slots=True)
class Ping:
    payload: bytes


@dataclass(slots=True)
class Pong:
    payload: bytes


@dataclass(slots=True)
class Close:
    """The client's close frame; ``code`` is None when it carried no status."""

    code: int | None
    reason: str


@dataclass(slots=True)
class Violation:
    """The client broke the protocol: close with ``code``; nothing after it is read."""

    code: int
    reason: str


Event = Text | Binary | Ping | Pong | Close | Violation


def unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``mask``, as one big-integer operation.

    Python has no vectorised XOR over bytes; converting both sides to one
    integer lets CPython do it in C, a microsecond for a chat-sized frame.
    """
    length = len(payload)
    if not length:
        return b""
    key = (bytes(mask) * (length // 4 + 1))[:length]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(length, "little")


class FrameReader:
    """Client frames in, events out.

    ``max_message`` bounds a whole message (all its fragments); a longer one
    is a :data:`CLOSE_TOO_BIG` violation, detected from the frame header
    before its payload is buffered.
    """

    __slots__ = ("_buffer", "_finished", "_fragments", "_fragments_size", "_message_opcode", "max")

    def __init__(self, max_message: int) -> None:
        self.max = max_message
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._message_opcode = 0  # TEXT or BINARY while a fragmented message is open
        self._finished = False  # after a close frame or a violation nothing more is read

    def feed(self, data: bytes) -> list[Event]:
        """Every event ``data`` completes (the tests' and simple callers' form)."""
        return list(self.events(data))

    def events(self, data: bytes) -> Iterator[Event]:
        """The events ``data`` completes, parsed one at a time as they are taken.

        Lazy, so that a caller that closes the connection part-way (a flood)
        stops the parsing too: what follows in a large read costs nothing.
        A caller that stops early must not feed this reader again.
        """
        if self._finished:
            return
        buffer = self._buffer
        if buffer:
            buffer += data
            view: bytes | bytearray = buffer
        else:
            view = data
        position = 0
        end = len(view)
        while end - position >= 2:
            first = view[position]
            second = view[position + 1]
            length = second & 0x7F
            header = 6
            if length == 126:
                header = 8
                if end - position < header:
                    break
                length = (view[position + 2] << 8) | view[position + 3]
            elif length == 127:
                header = 14
                if end - position < header:
                    break
                length = int.from_bytes(view[position + 2 : position + 10], "big")
                if length >> 63:
                    yield self._fail(Violation(CLOSE_PROTOCOL_ERROR, "invalid length"))
                    return
            violation = self._check_header(first, second, length)
            if violation is not None:
                yield self._fail(violation)
                return
            if end - position < header + length:
                break
            start = position + header
            payload = unmask(view[start : start + length], view[start - 4 : start])
            position = start + length
            event = self._frame(first & 0x80, first & 0x0F, payload)
            if event is not None:
                if type(event) is Violation or type(event) is Close:
                    self._finished = True
                    self._buffer.clear()
                    yield event
                    return
                yield event
        if view is buffer:
            del buffer[:position]
        elif position < end:  # keep the start of a frame that is still arriving
            buffer += view[position:]

    def _check_header(self, first: int, second: int, length: int) -> Violation | None:
        if first & 0x70:
            return Violation(CLOSE_PROTOCOL_ERROR, "reserved bits set without an extension")
        if not second & 0x80:
            return Violation(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        opcode = first & 0x0F
        if opcode >= OPCODE_CLOSE:
            if not first & 0x80 or length > 125:
                return Violation(CLOSE_PROTOCOL_ERROR, "invalid control frame")
        elif length + self._fragments_size > self.max:
            return Violation(CLOSE_TOO_BIG, f"message larger than {self.max} bytes")
        return None

    def _fail(self, violation: Violation) -> Violation:
        self._finished = True
        self._buffer.clear()
        self._fragments.clear()
        return violation

    def _frame(self, fin: int, opcode: int, payload: bytes) -> Event | None:
        if opcode in (OPCODE_TEXT, OPCODE_BINARY):
            if self._message_opcode:
                return Violation(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
            if fin:
                return _message(opcode, payload)
            self._message_opcode = opcode
            self._fragments.append(payload)
            self._fragments_size = len(payload)
            return None
        if opcode == OPCODE_CONTINUATION:
            if not self._message_opcode:
                return Violation(CLOSE_PROTOCOL_ERROR, "continuation without a message")
            if len(self._fragments) >= MAX_FRAGMENTS:
                return Violation(CLOSE_TOO_BIG, f"message in more than {MAX_FRAGMENTS} fragments")
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            if not fin:
                return None
            whole = b"".join(self._fragments)
            opcode, self._message_opcode = self._message_opcode, 0
            self._fragments.clear()
            self._fragments_size = 0
            return _message(opcode, whole)
        if opcode == OPCODE_PING:
            return Ping(payload)
        if opcode == OPCODE_PONG:
            return Pong(payload)
        if opcode == OPCODE_CLOSE:
            return _close(payload)
        return Violation(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")


def _message(opcode: int, payload: bytes) -> Text | Binary | Violation:
    if opcode == OPCODE_BINARY:
        return Binary(payload)
    try:
        return Text(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return Violation(CLOSE_INVALID_DATA, "text frame is not valid UTF-8")


def _close(payload: bytes) -> Close | Violation:
    if not payload:
        return Close(None, "")
    if len(payload) == 1:
        return Violation(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = (payload[0] << 8) | payload[1]
    if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
        return Violation(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        return Close(code, payload[2:].decode("utf-8"))
    except UnicodeDecodeError:
        return Violation(CLOSE_INVALID_DATA, "close reason is not valid UTF-8")


# -- server to client -------------------------------------------------------------


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final, uncompressed text frame."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 65536:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload


def control_frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked ping, pong or close (control payloads are at most 125 bytes)."""
    payload = payload[:125]
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with a status code and a reason cut to fit 125 bytes of UTF-8."""
    encoded = reason.encode()[:123].decode("utf-8", "ignore").encode()
    return control_frame(OPCODE_CLOSE, struct.pack("!H", code) + encoded)
