"""The WebSocket frame reader and the handshake, fed bytes directly (no sockets)."""

from __future__ import annotations

import base64
import hashlib
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.transport.frames import (
    CLOSE_INVALID_DATA,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    MAX_FRAGMENTS,
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    Binary,
    Close,
    FrameReader,
    Ping,
    Pong,
    Text,
    Violation,
    close_frame,
    control_frame,
    text_frame,
    unmask,
)
from roomcast.transport.handshake import parse_upgrade, switching_protocols
from tests.harness.raw_websocket import mask_frame


def frame(
    payload: bytes,
    opcode: int = OPCODE_TEXT,
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
) -> bytes:
    """A client frame, as a browser would send it (or, with the options, would not)."""
    return mask_frame(payload, opcode, fin, rsv=rsv, masked=masked)


def test_unmask_is_the_xor_of_the_repeated_key() -> None:
    mask = b"\x01\x02\x03\x04"
    for length in (0, 1, 3, 4, 5, 127, 1000):
        data = os.urandom(length)
        expected = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        assert unmask(data, mask) == expected


def test_whole_frames_in_one_read() -> None:
    reader = FrameReader(1024)
    data = frame(b'{"type":"ping"}') + frame(b"\x00\x01", OPCODE_BINARY) + frame(b"hi", OPCODE_PING)
    assert reader.feed(data) == [Text('{"type":"ping"}'), Binary(b"\x00\x01"), Ping(b"hi")]


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6), st.data())
def test_any_split_of_the_bytes_gives_the_same_events(
    payloads: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(frame(p, OPCODE_BINARY) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = FrameReader(1024)
    events = []
    start = 0
    for cut in [*cuts, len(stream)]:
        events += reader.feed(stream[start:cut])
        start = cut
    assert events == [Binary(p) for p in payloads]


def test_lengths_of_16_and_64_bits() -> None:
    reader = FrameReader(100_000)
    medium, large = "m" * 300, "l" * 70_000
    assert reader.feed(frame(medium.encode()) + frame(large.encode())) == [
        Text(medium),
        Text(large),
    ]


def test_fragments_are_joined_and_control_frames_may_come_between() -> None:
    reader = FrameReader(1024)
    data = (
        frame(b"hel", OPCODE_TEXT, fin=False)
        + frame(b"ping", OPCODE_PING)
        + frame(b"lo ", OPCODE_CONTINUATION, fin=False)
        + frame("wörld".encode(), OPCODE_CONTINUATION)
    )
    assert reader.feed(data) == [Ping(b"ping"), Text("hello wörld")]


def test_a_character_split_across_fragments_is_valid() -> None:
    reader = FrameReader(1024)
    encoded = "é".encode()
    data = frame(encoded[:1], fin=False) + frame(encoded[1:], OPCODE_CONTINUATION)
    assert reader.feed(data) == [Text("é")]


def test_close_frames() -> None:
    assert FrameReader(10).feed(frame(b"", OPCODE_CLOSE)) == [Close(None, "")]
    payload = struct.pack("!H", 1000) + b"bye"
    assert FrameReader(10).feed(frame(payload, OPCODE_CLOSE)) == [Close(1000, "bye")]
    assert FrameReader(10).feed(frame(struct.pack("!H", 4001), OPCODE_CLOSE)) == [Close(4001, "")]
    pong = frame(b"x", OPCODE_PONG)
    assert FrameReader(10).feed(pong) == [Pong(b"x")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(b"hi", masked=False), CLOSE_PROTOCOL_ERROR),
        (frame(b"hi", rsv=0x40), CLOSE_PROTOCOL_ERROR),
        (frame(b"hi", opcode=0x3), CLOSE_PROTOCOL_ERROR),
        (frame(b"hi", opcode=0xB), CLOSE_PROTOCOL_ERROR),
        (frame(b"x" * 126, OPCODE_PING), CLOSE_PROTOCOL_ERROR),
        (frame(b"", OPCODE_PING, fin=False), CLOSE_PROTOCOL_ERROR),
        (frame(b"more", OPCODE_CONTINUATION), CLOSE_PROTOCOL_ERROR),
        (frame(b"a", fin=False) + frame(b"b"), CLOSE_PROTOCOL_ERROR),
        (frame(b"\x03", OPCODE_CLOSE), CLOSE_PROTOCOL_ERROR),
        (frame(struct.pack("!H", 1005), OPCODE_CLOSE), CLOSE_PROTOCOL_ERROR),
        (frame(struct.pack("!H", 999), OPCODE_CLOSE), CLOSE_PROTOCOL_ERROR),
        (frame(struct.pack("!H", 1000) + b"\xff", OPCODE_CLOSE), CLOSE_INVALID_DATA),
        (frame(b"\xc3\x28"), CLOSE_INVALID_DATA),
        (frame(b"x" * 65), CLOSE_TOO_BIG),
        (frame(b"x" * 40, fin=False) + frame(b"y" * 40, OPCODE_CONTINUATION), CLOSE_TOO_BIG),
    ],
)
def test_violations_end_the_stream(data: bytes, code: int) -> None:
    reader = FrameReader(64)
    events = reader.feed(data + frame(b"after"))
    assert isinstance(events[-1], Violation) and events[-1].code == code
    assert reader.feed(frame(b"later")) == []  # nothing is read after a violation


def test_a_message_may_not_come_in_endless_empty_fragments() -> None:
    reader = FrameReader(64)
    data = frame(b"", fin=False) + frame(b"", OPCODE_CONTINUATION, fin=False) * MAX_FRAGMENTS
    events = reader.feed(data)
    assert events == [Violation(CLOSE_TOO_BIG, f"message in more than {MAX_FRAGMENTS} fragments")]


def test_many_fragments_within_the_bound_make_one_message() -> None:
    reader = FrameReader(4096)
    parts = [frame(b"a", fin=False)]
    parts += [frame(b"b", OPCODE_CONTINUATION, fin=False)] * (MAX_FRAGMENTS - 2)
    parts.append(frame(b"c", OPCODE_CONTINUATION))
    assert reader.feed(b"".join(parts)) == [Text("a" + "b" * (MAX_FRAGMENTS - 2) + "c")]


def test_nothing_is_read_after_a_close_frame() -> None:
    reader = FrameReader(64)
    events = reader.feed(frame(b"", OPCODE_CLOSE) + frame(b"after"))
    assert events == [Close(None, "")]
    assert reader.feed(frame(b"later")) == []


def test_a_64_bit_length_with_the_top_bit_set_is_a_protocol_error() -> None:
    header = struct.pack("!BBQ", 0x81, 0x80 | 127, 2**63) + b"mask"
    assert FrameReader(64).feed(header) == [Violation(CLOSE_PROTOCOL_ERROR, "invalid length")]


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    reader = FrameReader(64)
    header = struct.pack("!BBQ", 0x81, 0x80 | 127, 2**40) + b"mask"
    [violation] = reader.feed(header)
    assert violation == Violation(CLOSE_TOO_BIG, "message larger than 64 bytes")


def test_a_message_of_exactly_the_limit_passes() -> None:
    assert FrameReader(64).feed(frame(b"x" * 64)) == [Text("x" * 64)]


def test_server_frames() -> None:
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame(b"x" * 70000)[:10] == b"\x81\x7f" + (70000).to_bytes(8, "big")
    assert control_frame(OPCODE_PONG, b"p" * 200) == b"\x8a\x7d" + b"p" * 125
    assert close_frame(1009) == b"\x88\x02\x03\xf1"
    long_reason = close_frame(1000, "é" * 100)
    assert len(long_reason) <= 127 and long_reason[4:].decode() == "é" * 61


# -- the handshake ------------------------------------------------------------------


KEY = base64.b64encode(b"0123456789abcdef").decode()


def head(target: str = "/ws?user_id=al%20ice&token=t&user_id=x", **changes: str | None) -> bytes:
    headers = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    lines = [f"GET {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return "\r\n".join(lines).encode()


def test_a_valid_upgrade_is_recognised_with_its_query() -> None:
    upgrade = parse_upgrade(head(), "/ws")
    assert upgrade is not None
    assert upgrade.query == {"user_id": "al ice", "token": "t"}  # the first value wins
    assert upgrade.key == KEY


@pytest.mark.parametrize(
    "request_head",
    [
        head("/wsx"),
        head("/api/rooms"),
        head(Upgrade=None),
        head(Upgrade="h2c"),
        head(Connection="keep-alive"),
        head(Sec_WebSocket_Version="8"),
        head(Sec_WebSocket_Key=None),
        head(Sec_WebSocket_Key="c2hvcnQ="),
        head(Sec_WebSocket_Key="not base64!"),
        head().replace(b"GET ", b"POST "),
        head().replace(b"HTTP/1.1", b"HTTP/1.0"),
        head() + b"\r\nbroken header line",
    ],
)
def test_anything_else_is_left_to_the_http_server(request_head: bytes) -> None:
    assert parse_upgrade(request_head, "/ws") is None


def test_the_accept_key_follows_rfc_6455() -> None:
    # The example of RFC 6455 section 1.3.
    response = switching_protocols("dGhlIHNhbXBsZSBub25jZQ==")
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert response.endswith(b"\r\n\r\n")
    digest = hashlib.sha1(b"dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
    assert base64.b64encode(digest.digest()) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
