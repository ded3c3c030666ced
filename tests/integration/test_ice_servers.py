"""``GET /api/ice-servers``: STUN and time-limited TURN credentials for a user."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

from tests.harness.calls import (
    TURN_SECRET,
)
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

User = Callable[[str], str]


async def test_ice_servers_hand_out_stun_and_a_time_limited_turn_credential(
    tuned_server: ServerProcess,
) -> None:
    before = int(time.time())
    status, body = await http_json("GET", f"{tuned_server.http}/api/ice-servers?user_id=u")
    after = int(time.time())
    assert status == 200, body
    stun, turn = body["iceServers"]
    assert stun == {"urls": ["stun:a", "stun:b"]}
    assert set(turn) == {"urls", "username", "credential"}
    assert turn["urls"] == ["turn:t:3478"]
    expiry, _, name = turn["username"].partition(":")
    assert name == "u"
    assert before + 600 <= int(expiry) <= after + 600
    digest = hmac.new(TURN_SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
    assert turn["credential"] == base64.b64encode(digest).decode()


async def test_ice_servers_are_empty_by_default_and_need_a_user(server: ServerProcess) -> None:
    assert await http_json("GET", f"{server.http}/api/ice-servers?user_id=u") == (
        200,
        {"iceServers": []},
    )
