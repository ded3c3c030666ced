"""ICE servers for clients: STUN as configured, TURN with REST-API credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac

from roomcast.config import url_list
from roomcast.ice import ice_servers, turn_credential

NOW = 1_700_000_000


def test_turn_credential_is_base64_hmac_sha1_of_the_username() -> None:
    # Independently computed: base64(HMAC-SHA1(key="s", msg="1700000600:u")).
    expected = base64.b64encode(hmac.new(b"s", b"1700000600:u", hashlib.sha1).digest()).decode()
    assert turn_credential("s", "1700000600:u") == expected
    assert len(base64.b64decode(expected)) == 20  # a SHA-1 digest
    assert turn_credential("t", "1700000600:u") != expected
    assert turn_credential("s", "1700000601:u") != expected


def test_turn_username_expires_ttl_seconds_from_now_and_names_the_user() -> None:
    result = ice_servers(
        "u",
        NOW,
        stun_urls=["stun:a", "stun:b"],
        turn_urls=["turn:t:3478"],
        turn_secret="s",
        ttl=600,
    )
    username = f"{NOW + 600}:u"
    assert result == {
        "iceServers": [
            {"urls": ["stun:a", "stun:b"]},
            {
                "urls": ["turn:t:3478"],
                "username": username,
                "credential": base64.b64encode(
                    hmac.new(b"s", username.encode(), hashlib.sha1).digest()
                ).decode(),
            },
        ]
    }


def test_credentials_differ_per_user_and_per_time() -> None:
    def credential(user: str, now: int) -> str:
        servers = ice_servers(user, now, [], ["turn:t"], "s", 60)["iceServers"]
        assert len(servers) == 1
        value: str = servers[0]["credential"]
        return value

    assert credential("u", NOW) != credential("v", NOW)
    assert credential("u", NOW) != credential("u", NOW + 1)
    assert credential("u", NOW) == credential("u", NOW)


def test_user_ids_with_colons_and_unicode_are_kept_whole() -> None:
    (turn,) = ice_servers("a:b é", NOW, [], ["turn:t"], "sécret", 10)["iceServers"]
    assert turn["username"] == f"{NOW + 10}:a:b é"
    expected = hmac.new("sécret".encode(), turn["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(turn["credential"]) == expected


def test_no_turn_without_a_secret() -> None:
    for secret in (None, ""):
        assert ice_servers("u", NOW, ["stun:a"], ["turn:t:3478"], secret, 600) == {
            "iceServers": [{"urls": ["stun:a"]}]
        }


def test_no_turn_without_urls_even_with_a_secret() -> None:
    assert ice_servers("u", NOW, ["stun:a"], [], "s", 600) == {"iceServers": [{"urls": ["stun:a"]}]}


def test_stun_only_and_nothing_configured() -> None:
    assert ice_servers("u", NOW, ["stun:a", "stun:b"], [], None, 600) == {
        "iceServers": [{"urls": ["stun:a", "stun:b"]}]
    }
    assert ice_servers("u", NOW, [], [], None, 600) == {"iceServers": []}


def test_turn_only_without_stun() -> None:
    servers = ice_servers("u", NOW, [], ["turn:t:3478", "turns:t:5349"], "s", 600)["iceServers"]
    assert [server["urls"] for server in servers] == [["turn:t:3478", "turns:t:5349"]]


def test_url_lists_from_settings_drop_blanks_and_spaces() -> None:
    assert url_list(" stun:a , stun:b,,") == ["stun:a", "stun:b"]
    assert url_list("") == []
