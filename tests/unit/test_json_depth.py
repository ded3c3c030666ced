"""The JSON nesting bound: every client frame and HTTP body, before any decoder sees it."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.protocol import (
    MAX_JSON_DEPTH,
    CreateRoom,
    ErrorCode,
    PingRequest,
    ProtocolError,
    WebRTCRequest,
    check_json_depth,
    codec,
    decode_body,
    decode_client,
)
from roomcast.protocol.codec import _nested_deeper


def nested(depth: int, leaf: str = "1") -> str:
    """``depth`` arrays and objects, alternating, around ``leaf``."""
    text = leaf
    for level in range(depth):
        text = f"[{text}]" if level % 2 else f'{{"k":{text}}}'
    return text


def ping_with(extra_depth: int) -> str:
    """A ping frame nesting ``2 + extra_depth`` levels: envelope, payload, then ``x``."""
    return '{"type":"ping","payload":{"x":' + nested(extra_depth) + "}}"


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


def refusal(data: bytes | str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_client(data)
    return info.value


def test_the_limit_is_small_and_every_protocol_message_fits_it() -> None:
    assert MAX_JSON_DEPTH == 32
    offer = {
        "type": "webrtc",
        "payload": {
            "type": "ice_candidate",
            "to_user_id": "bob",
            "data": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMLineIndex": 0},
            "media": {"audio": True, "video": {"width": [640, 1280]}},
        },
    }
    assert isinstance(decode_client(json.dumps(offer)), WebRTCRequest)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_frame_at_the_limit_decodes_and_one_level_more_is_invalid_message(
    as_bytes: bool,
) -> None:
    for depth in (MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH):
        frame = ping_with(depth - 2)
        assert depth_of(json.loads(frame)) == depth
        assert decode_client(frame.encode() if as_bytes else frame) == PingRequest()
    frame = ping_with(MAX_JSON_DEPTH - 1)
    error = refusal(frame.encode() if as_bytes else frame)
    assert error.code is ErrorCode.INVALID_MESSAGE
    assert error.message == "message: JSON nested deeper than 32 levels of arrays and objects"


@pytest.mark.parametrize("depth", [33, 100, 983, 985, 988, 989, 990, 1000, 5000, 100_000])
def test_deep_frames_are_invalid_message_never_recursion_error(depth: int) -> None:
    for frame in (
        ping_with(depth - 2),
        "[" * depth + "]" * depth,
        "[" * depth,  # never closed
        '{"type":"webrtc","payload":{"type":"offer","to_user_id":"b","data":%s}}'
        % ("[" * (depth - 2) + "]" * (depth - 2)),
    ):
        error = refusal(frame)
        assert error.code is ErrorCode.INVALID_MESSAGE
        assert error.message == "message: JSON nested deeper than 32 levels of arrays and objects"


def test_brackets_inside_strings_do_not_count() -> None:
    tricky = ["[" * 40, "{" * 40, '\\"' + "[" * 40, "\\\\" * 3, "[\\\\", '"\\"[[[['] * 10
    frame = json.dumps({"type": "ping", "payload": {"a": tricky, "b": {"[[[": "]]]" * 50}}})
    assert decode_client(frame) == PingRequest()
    assert decode_client(json.dumps({"type": "ping", "x": "é[" * 100}, ensure_ascii=False)) == (
        PingRequest()
    )
    # A string ending in an escaped backslash really ends: what follows is structure.
    deep_after_string = '{"type":"ping","payload":{"s":"a\\\\","x":' + nested(40) + "}}"
    assert refusal(deep_after_string).code is ErrorCode.INVALID_MESSAGE


def test_wide_but_shallow_json_is_not_deep() -> None:
    wide = {"type": "ping", "payload": {"x": [[{"a": []}, [1, [2]]]] * 3000}}
    assert decode_client(json.dumps(wide)) == PingRequest()
    chains = {"type": "ping", "payload": {"x": [json.loads(nested(28))] * 300}}
    assert decode_client(json.dumps(chains)) == PingRequest()


def test_malformed_shallow_json_is_still_invalid_json() -> None:
    ping = '{"type":"ping","x":'
    for frame in (
        ping + "[}" * 40,
        "]" * 50 + "[" * 10,
        '{"a":' + "[]," * 40,
        ping + "[" + "[]" * 40,
    ):
        assert refusal(frame).code is ErrorCode.INVALID_JSON, frame


@pytest.mark.parametrize("depth", [31, 32, 33, 985, 1000, 100_000])
def test_http_bodies_have_the_same_bound(depth: int) -> None:
    body = ('{"name":"r","members":%s}' % ("[" * (depth - 1) + "]" * (depth - 1))).encode()
    with pytest.raises(ProtocolError) as info:
        decode_body(body, CreateRoom)
    assert info.value.code is ErrorCode.INVALID_MESSAGE
    if depth > MAX_JSON_DEPTH:
        assert info.value.message == "body: JSON nested deeper than 32 levels of arrays and objects"
    else:  # shallow enough: the decoder's own verdict on the field
        assert info.value.message.startswith("body.members[0]: expected `str`")


def test_ordinary_frames_take_the_counting_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a timing test: a frame with few brackets is accepted without the scan."""
    scanned: list[bytes] = []

    def spy(data: bytes, limit: int) -> bool:
        scanned.append(data)
        return _nested_deeper(data, limit)

    monkeypatch.setattr(codec, "_nested_deeper", spy)
    check_json_depth('{"type":"chat","payload":{"room_id":1,"content":"hi"}}', "message")
    check_json_depth(b'{"type":"ping","payload":{"x":[1,[2,[3]]]}}', "message")
    assert scanned == []
    with pytest.raises(ProtocolError):
        check_json_depth("[" * 33 + "]" * 33, "message")
    assert scanned == [b"[" * 33 + b"]" * 33]


# -- the scan against a reference, on valid JSON and on garbage ----------------------

json_values = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ aé\n', max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\ a', max_size=4), inner, max_size=3)
    ),
    max_leaves=60,
)


@settings(max_examples=400, deadline=None)
@given(json_values, st.sampled_from([1, 2, 3, 5, 8, 32]), st.booleans())
def test_the_scan_agrees_with_the_real_depth_of_valid_json(
    value: Any, limit: int, ascii_only: bool
) -> None:
    data = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert _nested_deeper(data, limit) == (depth_of(value) > limit)


def decoder_reach(data: bytes) -> int:
    """How deep a left-to-right JSON decoder gets before its first structural error."""
    stack: list[int] = []
    deepest = 0
    closing = {ord("["): ord("]"), ord("{"): ord("}")}
    position = 0
    while position < len(data):
        byte = data[position]
        if byte == ord('"'):
            position += 1
            while position < len(data) and data[position] != ord('"'):
                position += 2 if data[position] == ord("\\") else 1
            if position >= len(data):
                return deepest
        elif byte == ord("\\"):
            return deepest  # a backslash outside a string: the decoder stops here
        elif byte in closing:
            stack.append(closing[byte])
            deepest = max(deepest, len(stack))
        elif byte in (ord("]"), ord("}")) and (not stack or stack.pop() != byte):
            return deepest
        position += 1
    return deepest


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(list(b'[]{}"\\a,')), max_size=120), st.integers(1, 8))
def test_garbage_is_never_judged_shallower_than_a_decoder_would_find_it(
    symbols: list[int], limit: int
) -> None:
    data = bytes(symbols)
    if not _nested_deeper(data, limit):
        assert decoder_reach(data) <= limit


def test_msgspec_really_recurses_past_the_bound_it_is_protected_from() -> None:
    """Why the bound exists: the decoder itself fails on deep input with RecursionError."""
    with pytest.raises(RecursionError):
        msgspec.json.decode(b"[" * 5000 + b"]" * 5000)


def test_the_shortest_text_nested_past_the_limit_without_arrays_is_refused() -> None:
    """Objects only, unclosed: four characters a level, the least any text needs."""
    check_json_depth('{"":' * MAX_JSON_DEPTH, "message")
    with pytest.raises(ProtocolError, match="nested deeper than 32"):
        check_json_depth('{"":' * (MAX_JSON_DEPTH + 1), "message")
    with pytest.raises(ProtocolError, match="nested deeper than 32"):
        check_json_depth(b'{"":' * (MAX_JSON_DEPTH + 1), "body")
