"""Random and malformed frames against a running server (property-based).

For every generated sequence of frames: the server answers each bad one with
an ``error`` of a documented code (never ``internal``, never a traceback), the
connection stays usable, and a user in a private room the fuzzing user cannot
enter hears nothing at all. The fuzzing user is never shown as anyone else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomcast.protocol import CLIENT_TYPES, ErrorCode
from tests.support import Client, ServerProcess, http_json

CODES = {code.value for code in ErrorCode} - {"internal"}
FIELDS = [
    "room_id",
    "content",
    "type",
    "message_id",
    "emoji",
    "is_typing",
    "status",
    "user_id",
    "from_user_id",
    "to_user_id",
    "data",
    "call_id",
    "since",
    "client_msg_id",
    "media",
    "reason",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
small_ids = st.integers(min_value=-2, max_value=5) | st.sampled_from([2**63, 2**64, 1.5, "1"])
payloads = st.dictionaries(
    st.sampled_from(FIELDS),
    json_values | small_ids | st.sampled_from(["text", "offer", "answer", "online", "👍", ""]),
    max_size=6,
)
envelopes = st.builds(
    lambda type_, payload, extra: json.dumps({"type": type_, "payload": payload, **extra}),
    st.sampled_from(sorted(CLIENT_TYPES)) | st.text(max_size=12),
    payloads | json_values,
    st.dictionaries(st.sampled_from(["timestamp", "id", "payload2"]), json_values, max_size=2),
)
frames = st.lists(
    envelopes
    | st.text(max_size=60)
    | json_values.map(json.dumps)
    | st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    min_size=1,
    max_size=12,
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database: Path = tmp_path_factory.mktemp("fuzz") / "roomcast.db"
    server = ServerProcess(database, "--rate-limits", "off").start()
    yield server
    server.stop()


def check_frame(frame: dict[str, Any], me: str) -> None:
    assert set(frame) == {"type", "payload", "timestamp"}, frame
    payload = frame["payload"]
    if frame["type"] == "error":
        assert payload["code"] in CODES, payload
        assert "Traceback" not in payload["message"]
    for key in ("user_id", "from_user_id"):
        # Everything this lone user can cause is about this user.
        if key in payload and frame["type"] not in ("connected",):
            assert payload[key] == me, frame


async def run_example(server: ServerProcess, sequence: list[str]) -> None:
    status, room = await http_json(
        "POST",
        f"{server.http}/api/rooms?user_id=watcher",
        {"name": "watchers only", "private": True, "members": []},
    )
    assert status == 201
    watcher = await Client.connect(server.ws_url, "watcher")
    fuzzer = await Client.connect(server.ws_url, "fuzzer")
    try:
        await watcher.join(room["id"])
        for text in sequence:
            await fuzzer.send_raw(text)
        await fuzzer.send("ping")
        while True:  # everything up to the pong answers the frames above
            frame = await fuzzer.next(timeout=5)
            check_frame(frame, "fuzzer")
            if frame["type"] == "pong":
                break
        await watcher.sync()  # the watcher got nothing but its own pong
        assert not fuzzer.ws.closed
    finally:
        await fuzzer.close()
        await watcher.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=frames)
def test_random_frames_get_documented_errors_and_isolation_holds(
    fuzz_server: ServerProcess, sequence: list[str]
) -> None:
    asyncio.run(run_example(fuzz_server, sequence))


def test_server_is_healthy_after_fuzzing(fuzz_server: ServerProcess) -> None:
    async def check() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{fuzz_server.http}/health") as response,
        ):
            assert response.status == 200
        assert "Traceback" not in fuzz_server.log()

    asyncio.run(check())
