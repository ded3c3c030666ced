"""Decoding client frames: exact error codes and messages that name the field."""

from __future__ import annotations

import json

import pytest

from roomcast.protocol import (
    ChatRequest,
    ErrorCode,
    JoinRoomRequest,
    LeaveRoomRequest,
    PingRequest,
    Pong,
    ProtocolError,
    decode_client,
    encode,
    encode_request,
)


def frame(type: str, payload: object = None) -> bytes:
    message: dict[str, object] = {"type": type}
    if payload is not None:
        message["payload"] = payload
    return json.dumps(message).encode()


def error_of(data: bytes | str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_client(data)
    return info.value


def test_decodes_typed_requests_and_ignores_client_timestamp() -> None:
    request = decode_client(b'{"type":"join_room","payload":{"room_id":4},"timestamp":"junk"}')
    assert request == JoinRoomRequest(room_id=4)
    assert decode_client(frame("ping")) == PingRequest()
    assert decode_client(frame("leave_room")) == LeaveRoomRequest(room_id=None)
    chat = decode_client(frame("chat", {"room_id": 1, "content": "hi", "user_id": "al"}))
    assert isinstance(chat, ChatRequest)
    assert chat.claimed_users() == ("al",)


@pytest.mark.parametrize(
    ("data", "code", "needle"),
    [
        (b"{nope", ErrorCode.INVALID_JSON, "invalid JSON"),
        (b"[1,2]", ErrorCode.INVALID_MESSAGE, "expected `object`"),
        (b'{"payload":{}}', ErrorCode.INVALID_MESSAGE, "`type`"),
        (frame("chat", {"room_id": "1", "content": "x"}), ErrorCode.INVALID_MESSAGE, "payload.room_id"),
        (frame("chat", {"room_id": 1}), ErrorCode.INVALID_MESSAGE, "`content`"),
        (frame("join_room", {"room_id": 0}), ErrorCode.INVALID_MESSAGE, "payload.room_id"),
        (frame("join_room", {"room_id": True}), ErrorCode.INVALID_MESSAGE, "payload.room_id"),
        (frame("join_room", {"room_id": 2**70}), ErrorCode.INVALID_MESSAGE, "payload.room_id"),
        (frame("join_room", []), ErrorCode.INVALID_MESSAGE, "payload"),
        (frame("presence", {"status": "sleepy"}), ErrorCode.INVALID_MESSAGE, "payload.status"),
        (frame("chat", {"room_id": 1, "content": "x", "type": "html"}), ErrorCode.INVALID_MESSAGE, "payload.type"),
        (frame("chat", {"room_id": 1, "content": "x", "user_id": "a\nb"}), ErrorCode.INVALID_MESSAGE, "payload.user_id"),
        (frame("teleport", {}), ErrorCode.UNKNOWN_TYPE, "teleport"),
    ],
)  # fmt: skip
def test_bad_frames_get_exact_errors(data: bytes, code: ErrorCode, needle: str) -> None:
    error = error_of(data)
    assert error.code is code
    assert needle in error.message


def test_error_names_the_offending_type() -> None:
    assert error_of(frame("typing", {"room_id": 1})).type == "typing"
    assert error_of(b"{").type is None


def test_encode_envelope() -> None:
    assert json.loads(encode(Pong(), 123)) == {"type": "pong", "payload": {}, "timestamp": 123}


def test_encode_request_keeps_exactly_the_requests_fields() -> None:
    padded = (
        b'{"type":"typing","payload":{"room_id":3,"is_typing":true,"pad":"' + b"x" * 5000 + b'"}}'
    )
    request = decode_client(padded)
    encoded = encode_request(request)
    assert len(encoded) < 200
    assert decode_client(encoded) == request
