"""The name rule for user ids and room names (``protocol.visible_name``), and where it
is applied: payload fields, HTTP bodies, stated user ids."""

from __future__ import annotations

import re

import pytest

from roomcast.auth import Authenticator, AuthError
from roomcast.protocol import (
    CreateRoom,
    ErrorCode,
    ProtocolError,
    WebRTCRequest,
    decode_body,
    decode_client,
    visible_name,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice", "alice"),
        ("Zoë Ångström", "Zoë Ångström"),
        ("zoe\u0308", "zo\u00eb"),  # NFC
        ("\u212b", "\u00c5"),  # the Angstrom sign is the letter Å in NFC
        ("a b", "a b"),
        ("a\u00a0x", "a\u00a0x"),  # other spaces are visible between letters
        ("\u00a0x ", "x"),  # around a name they show as nothing
        ("\u2764\ufe0f team", "\u2764\ufe0f team"),  # a variation selector after a symbol
        ("1\ufe0f\u20e3 first", "1\ufe0f\u20e3 first"),  # ... or in a keycap
        ("\ue000", "\ue000"),  # private use: an icon font's glyph
        ("\U0001faea", "\U0001faea"),  # newer than this Python's Unicode tables
        ("\U0001f44d\ufe0f", "\U0001f44d\ufe0f"),  # a variation selector is a mark
        ("e\u0301" * 40, "\u00e9" * 40),  # 80 characters as sent, 40 in NFC: the limit is NFC's
        # A joiner inside an emoji sequence hides nothing: team names use them.
        ("\U0001f469\u200d\U0001f4bb team", "\U0001f469\u200d\U0001f4bb team"),
        ("\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f3f3\ufe0f\u200d\U0001f308"),
        ("\U0001f469\U0001f3fd\u200d\U0001f4bb", "\U0001f469\U0001f3fd\u200d\U0001f4bb"),
    ],
)
def test_visible_names_are_kept_in_nfc(text: str, expected: str) -> None:
    assert visible_name(text, 64) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "1-64"),
        ("x" * 65, "1-64"),
        ("a\x1bb", "control characters (U+001B)"),
        ("a\x85b", "control characters (U+0085)"),
        ("\u202eecila", "invisible or bidi control characters (U+202E)"),
        ("a\u200bb", "U+200B"),
        ("a\u200cb", "U+200C"),
        ("a\u200db", "U+200D"),
        ("a\u200d\U0001f4bb", "U+200D"),  # a joiner between a letter and an emoji
        ("\U0001f469\u200d", "U+200D"),
        ("a\u200eb", "U+200E"),
        ("a\u200fb", "U+200F"),
        ("a\u202ab", "U+202A"),
        ("a\u2060b", "U+2060"),
        ("a\u2064b", "U+2064"),
        ("a\u2066b", "U+2066"),
        ("a\u2069b", "U+2069"),
        ("\ufeffa", "U+FEFF"),
        ("a\u00adb", "U+00AD"),
        ("a\U000e0041b", "U+E0041"),  # a tag character
        ("a\u2028b", "U+2028"),
        ("a\u2029b", "U+2029"),
        ("   ", "blank"),
        ("\u3000\u00a0", "blank"),
        ("\u3164\u3164", "U+3164"),  # Hangul fillers show as nothing
        ("ali\u034fce", "invisible characters (U+034F)"),
        ("ali\ufe0fce", "U+FE0F"),  # a variation selector after a letter
        ("al\u180bice", "U+180B"),
        ("al\u17b4ice", "U+17B4"),
        ("alice\U000e0100", "U+E0100"),
        ("\u2800", "blank"),
    ],
)
def test_names_with_hidden_characters_or_nothing_visible_are_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        visible_name(text, 64)


def test_payload_names_are_checked_where_they_are_claimed_and_used() -> None:
    request = decode_client('{"type":"presence","payload":{"status":"away","user_id":"zoe\u0308"}}')
    assert request.claimed_users() == ("zo\u00eb",)
    bidi = decode_client(
        '{"type":"typing","payload":{"room_id":1,"is_typing":true,"from_user_id":"\u202eecila"}}'
    )
    with pytest.raises(ProtocolError) as refused:
        bidi.claimed_users()
    assert refused.value.code is ErrorCode.INVALID_MESSAGE
    assert refused.value.message.startswith("payload.from_user_id: ")
    assert refused.value.type == "typing"
    offer = '{"type":"webrtc","payload":{"type":"offer","to_user_id":"%s","data":{}}}'
    normalised = decode_client(offer % "zoe\u0308")
    assert isinstance(normalised, WebRTCRequest) and normalised.to_user_id == "zo\u00eb"
    with pytest.raises(ProtocolError) as refused:
        decode_client(offer % "a\u200bb")
    assert refused.value.message == (
        "payload.to_user_id: must not contain invisible or bidi control characters (U+200B)"
    )


def test_room_bodies_are_kept_in_nfc_and_name_the_bad_field() -> None:
    body = decode_body('{"name":"Cafe\u0301","members":["zoe\u0308"]}'.encode(), CreateRoom)
    assert (body.name, body.members) == ("Caf\u00e9", ["zo\u00eb"])
    for data, message in (
        ('{"name":"   "}', "body.name: must not be blank"),
        ('{"name":"a\\u0007"}', "body.name: must not contain control characters (U+0007)"),
        ('{"name":"r","members":["ok","\\u202e"]}', "body.members[1]: must not contain"),
    ):
        with pytest.raises(ProtocolError) as refused:
            decode_body(data.encode(), CreateRoom)
        assert refused.value.code is ErrorCode.INVALID_MESSAGE
        assert refused.value.message.startswith(message), refused.value.message


def test_stated_user_ids_follow_the_same_rule() -> None:
    auth = Authenticator(None)
    assert auth.resolve(None, "zoe\u0308") == "zo\u00eb"
    with pytest.raises(AuthError, match=re.escape("U+202E")):
        auth.resolve(None, "\u202eecila")
    with pytest.raises(AuthError, match="blank"):
        auth.resolve(None, " ")
