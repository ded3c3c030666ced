"""Deeply nested JSON, over the WebSocket and in HTTP bodies, against a real server.

At every depth past the bound the answer is ``invalid_message`` naming the
limit, counted and rate-limited like any refused frame; the connection keeps
working and nothing is logged as a failure. (Without the bound, about 990
levels raised ``RecursionError`` out of the frame reader: close 1006, no
error frame, a traceback; a little less gave ``internal``.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.client import Client, expect_close
from tests.harness.http import http_request
from tests.harness.server import ServerProcess
from tests.integration.test_metrics import scrape

LIMIT = 32
DEPTH_MESSAGE = f"JSON nested deeper than {LIMIT} levels of arrays and objects"
#: Total nesting of the frame (its envelope is level 1).
DEPTHS = [LIMIT - 1, LIMIT, LIMIT + 1, 100, *range(983, 1001), 100_000]


def ping_nested(depth: int) -> str:
    """A ping whose frame nests ``depth`` levels: envelope, payload, then ``x``."""
    inner = depth - 2
    return '{"type":"ping","payload":{"x":' + "[" * inner + "]" * inner + "}}"


def offer_nested(depth: int, to_user: str) -> str:
    inner = depth - 2
    nesting = "[" * inner + "]" * inner
    payload = f'{{"type":"offer","to_user_id":"{to_user}","data":{nesting}}}'
    return f'{{"type":"webrtc","payload":{payload}}}'


@pytest.fixture(scope="module")
def roomy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Frames and bodies large enough for 100,000 levels (200 KB of brackets)."""
    database = tmp_path_factory.mktemp("deep") / "roomcast.db"
    process = ServerProcess(
        database, "--max-message-bytes", "400000", "--rate-limits", "off"
    ).start()
    yield process
    process.stop()


async def test_websocket_frames_at_every_depth(roomy_server: ServerProcess) -> None:
    client = await Client.connect(roomy_server.ws_url, "deep-ws")
    callee = await Client.connect(roomy_server.ws_url, "deep-callee")
    before = await scrape(roomy_server)
    refused = 0
    try:
        for depth in DEPTHS:
            for frame in (ping_nested(depth), offer_nested(depth, "deep-callee")):
                await client.send_raw(frame)
                reply = await client.recv(timeout=10)
                if depth <= LIMIT:
                    # Shallow enough: decoded. (The offer is refused for what it is, not
                    # for its depth: callee and caller share no room.)
                    assert reply["type"] in ("pong", "error"), reply
                    if reply["type"] == "error":
                        assert reply["payload"]["code"] == "forbidden", reply
                    continue
                refused += 1
                assert reply == {
                    "type": "error",
                    "payload": {"code": "invalid_message", "message": f"message: {DEPTH_MESSAGE}"},
                    "timestamp": reply["timestamp"],
                }, (depth, reply)
                await client.sync()  # still open, nothing else was sent
        after = await scrape(roomy_server)
        key = ("roomcast_messages_received_total", (("type", "invalid"),))
        assert after.get(key, 0) - before.get(key, 0) == refused
        errors = ("roomcast_errors_total", (("code", "invalid_message"),))
        assert after.get(errors, 0) - before.get(errors, 0) >= refused
    finally:
        await client.close()
        await callee.close()
    log = roomy_server.log()
    assert "Traceback" not in log
    assert "RecursionError" not in log
    assert "internal" not in log


@pytest.mark.parametrize("depth", DEPTHS)
async def test_http_bodies_at_every_depth(roomy_server: ServerProcess, depth: int) -> None:
    inner = depth - 1
    body = ('{"name":"deep","members":' + "[" * inner + "]" * inner + "}").encode()
    status, _, answer = await http_request(
        "POST",
        f"{roomy_server.http}/api/rooms?user_id=deep-http",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_message", answer
    if depth > LIMIT:
        assert answer["error"]["message"] == f"body: {DEPTH_MESSAGE}"
    else:  # within the bound: the decoder's own verdict (members holds strings)
        assert answer["error"]["message"].startswith("body.members[0]: expected `str`"), answer
    assert "Traceback" not in roomy_server.log()


async def test_deep_frames_count_against_the_rate_limits_and_flood_strikes(
    tmp_path: Path,
) -> None:
    # A burst of 5 for refused frames, hardly any refill, 2 strikes before the cut.
    server = ServerProcess(
        tmp_path / "flood.db", "--rate-limits", "other=0.01/5", "--flood-strikes", "2"
    ).start()
    try:
        client = await Client.connect(server.ws_url, "deep-flooder")
        for _ in range(12):
            await client.send_raw(ping_nested(1000))
        codes = []
        for _ in range(7):
            codes.append((await client.recv("error", timeout=5))["payload"]["code"])
        assert codes == ["invalid_message"] * 5 + ["rate_limited"] * 2
        await expect_close(client, 1008)
        await client.close()
        assert "flood" in server.log()
        assert "RecursionError" not in server.log()
    finally:
        server.stop()
