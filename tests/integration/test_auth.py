"""Token mode, private rooms, the open-mode bind guard and ``ROOMCAST_*`` settings.

A refused WebSocket is answered the way roomcast/transport/websocket.py's
``_refuse`` does it: the handshake completes, one ``error`` frame with code
``unauthenticated`` (and no ``type``) follows, then a close with 1008.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from tests.harness.backends import POSTGRES_URL, REDIS_URL, drop_cluster_state
from tests.harness.client import Client, expect_close, users
from tests.harness.http import all_rooms, http_request
from tests.harness.server import ServerProcess, free_port

SECRET = "s3cret"

UserName = Callable[[str], str]


# -- tokens ---------------------------------------------------------------------------


def token(sub: Any, *, secret: str = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"iat": now, "exp": now + 300, **claims}
    if sub is not None:
        payload["sub"] = sub
    # PyJWT warns that "s3cret" is a short HMAC key; the brief's secret is short on purpose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm=algorithm)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def crafted(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT assembled by hand (for headers PyJWT will not produce), HMAC-SHA256 signed."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{_b64(signature)}"


def tampered(valid: str, sub: str) -> str:
    """``valid`` with its claims swapped for other ones and its signature kept."""
    header, _, signature = valid.split(".")
    claims = _b64(json.dumps({"sub": sub, "exp": int(time.time()) + 300}).encode())
    return f"{header}.{claims}.{signature}"


def bearer(sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub)}"}


# -- servers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database = tmp_path_factory.mktemp("token") / "roomcast.db"
    process = ServerProcess(database, "--auth-secret", SECRET).start()
    yield process
    process.stop()


@pytest.fixture
async def connect_token(token_server: ServerProcess) -> AsyncIterator[Callable[..., Any]]:
    """``await connect_token(sub)`` -> a Client authenticated as ``sub``."""
    clients: list[Client] = []

    async def open_client(sub: str, **kwargs: Any) -> Client:
        client = await Client.connect(token_server.ws_url, token=token(sub), **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


async def create_room(
    server: ServerProcess, owner: str, name: str, private: bool, members: list[str]
) -> dict[str, Any]:
    body = {"name": name, "private": private, "members": members}
    status, _, room = await http_request(
        "POST", f"{server.http}/api/rooms", json_body=body, headers=bearer(owner)
    )
    assert status == 201, room
    return dict(room)


def clean_env(**values: str) -> dict[str, str]:
    """The test's environment without any ROOMCAST_* setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    return {**env, "PYTHONUNBUFFERED": "1", **values}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roomcast", *args],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=15,
    )


# -- WebSocket authentication -----------------------------------------------------------


async def test_valid_token_connects_as_its_subject(
    token_server: ServerProcess, user: UserName
) -> None:
    # A ?user_id= next to a token is ignored: the token says who this is.
    client = await Client.connect(token_server.ws_url, user("other"), token=token(user("alice")))
    try:
        assert client.connected["user_id"] == user("alice")
        await client.sync()
    finally:
        await client.close()


def _refused_tokens() -> list[Any]:
    now = int(time.time())
    good_header = {"alg": "HS256", "typ": "JWT"}
    claims = {"sub": "mallory", "exp": now + 300}
    key = SECRET.encode()
    return [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param(token("mallory", exp=now - 60), id="expired"),
        pytest.param(token("mallory", nbf=now + 3600), id="not-yet-valid"),
        pytest.param(token("mallory", secret="other-secret"), id="forged"),
        pytest.param(tampered(token("alice"), "mallory"), id="tampered-claims"),
        pytest.param(jwt.encode(claims, None, algorithm="none"), id="alg-none"),  # type: ignore[arg-type]
        pytest.param(crafted({"alg": "none"}, claims, key), id="alg-none-with-signature"),
        pytest.param(crafted({"alg": "RS256"}, claims, key), id="alg-rs256-hmac-signed"),
        pytest.param(token("mallory", algorithm="HS512"), id="hs512"),
        pytest.param(token("mallory", algorithm="HS384"), id="hs384"),
        pytest.param(token(None), id="no-sub"),
        pytest.param(crafted(good_header, {**claims, "sub": 123}, key), id="sub-not-string"),
        pytest.param(token(""), id="sub-empty"),
        pytest.param(token("a\u0001b"), id="sub-control-char"),
        pytest.param(token("s" * 65), id="sub-too-long"),
    ]


@pytest.mark.parametrize("bad_token", _refused_tokens())
async def test_bad_or_missing_token_is_refused_with_error_then_1008(
    token_server: ServerProcess, bad_token: str | None
) -> None:
    client = await Client.connect(token_server.ws_url, token=bad_token, expect_connected=False)
    try:
        error = await client.expect_error("unauthenticated")
        assert set(error) == {"code", "message"}, error
        await expect_close(client, 1008)
    finally:
        await client.close()


async def test_user_id_without_token_is_refused_in_token_mode(
    token_server: ServerProcess, user: UserName
) -> None:
    client = await Client.connect(token_server.ws_url, user("alice"), expect_connected=False)
    try:
        await client.expect_error("unauthenticated")
        await expect_close(client, 1008)
    finally:
        await client.close()


async def test_token_is_refused_in_open_mode(server: ServerProcess, user: UserName) -> None:
    client = await Client.connect(server.ws_url, token=token(user("alice")), expect_connected=False)
    try:
        error = await client.expect_error("unauthenticated")
        assert set(error) == {"code", "message"}, error
        await expect_close(client, 1008)
    finally:
        await client.close()


async def test_payload_naming_another_user_is_forbidden_in_token_mode(
    token_server: ServerProcess, connect_token: Callable[..., Any], user: UserName
) -> None:
    alice: Client = await connect_token(user("alice"))
    room = await create_room(token_server, user("alice"), "spoof", False, [])
    assert (await alice.recv("room_created"))["payload"]["room"] == room
    await alice.join(room["id"])
    await alice.send("chat", {"room_id": room["id"], "content": "x", "user_id": user("bob")})
    error = await alice.expect_error("forbidden", "chat")
    assert set(error) == {"code", "message", "type"}
    await alice.sync()


async def test_join_of_unknown_room_is_not_found_in_token_mode(
    token_server: ServerProcess, connect_token: Callable[..., Any], user: UserName
) -> None:
    alice: Client = await connect_token(user("alice"))
    unknown = 987_654_321
    await alice.send("join_room", {"room_id": unknown})
    error = await alice.expect_error("not_found", "join_room")
    assert str(unknown) in error["message"]
    await alice.sync()
    # ... and nothing was created by asking.
    status, _, body = await http_request(
        "GET", f"{token_server.http}/api/rooms/{unknown}/messages", headers=bearer(user("alice"))
    )
    assert (status, body["error"]["code"]) == (404, "not_found")
    listed = await all_rooms(token_server, headers=bearer(user("alice")))
    assert unknown not in [room["id"] for room in listed]


# -- HTTP authentication ------------------------------------------------------------------


async def test_http_with_bearer_token_works(token_server: ServerProcess, user: UserName) -> None:
    room = await create_room(token_server, user("alice"), "bearer room", False, [])
    assert room["created_by"] == user("alice")
    for scheme in ("Bearer", "bearer"):
        headers = {"Authorization": f"{scheme} {token(user('bob'))}"}
        listed = await all_rooms(token_server, headers=headers)
        assert room["id"] in [r["id"] for r in listed]
    for path in ("messages", "users"):
        status, _, body = await http_request(
            "GET", f"{token_server.http}/api/rooms/{room['id']}/{path}", headers=bearer(user("bob"))
        )
        assert status == 200, body


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer "}, id="empty-bearer"),
        pytest.param({"Authorization": "Bearer not-a-jwt"}, id="garbage"),
        pytest.param({"Authorization": f"Bearer {token('x', secret='other')}"}, id="forged"),
        pytest.param({"Authorization": f"Bearer {token('x', algorithm='HS512')}"}, id="hs512"),
        pytest.param({"Authorization": f"Basic {token('x')}"}, id="basic-scheme"),
        pytest.param({"Authorization": token("x")}, id="no-scheme"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms?user_id=alice"),
        ("POST", "/api/rooms"),
        ("GET", "/api/rooms/1/messages"),
        ("GET", "/api/rooms/1/users"),
    ],
)
async def test_http_without_valid_bearer_token_is_401(
    token_server: ServerProcess, headers: dict[str, str], method: str, path: str
) -> None:
    body = {"name": "nope"} if method == "POST" else None
    status, content_type, error = await http_request(
        method, f"{token_server.http}{path}", json_body=body, headers=headers
    )
    assert (status, content_type) == (401, "application/json"), error
    assert set(error) == {"error"}
    assert error["error"]["code"] == "unauthenticated"
    assert isinstance(error["error"]["message"], str) and error["error"]["message"]


async def test_health_and_asyncapi_need_no_token(token_server: ServerProcess) -> None:
    status, _, body = await http_request("GET", f"{token_server.http}/health")
    assert (status, body["status"], body["database"]) == (200, "ok", "ok")
    # Whether the document itself is served is tested in tests/unit/test_asyncapi.py.
    status, _, body = await http_request("GET", f"{token_server.http}/asyncapi.json")
    assert status != 401, body


# -- private rooms --------------------------------------------------------------------------


async def test_private_room_admits_only_its_members(
    token_server: ServerProcess, connect_token: Callable[..., Any], user: UserName
) -> None:
    alice_id, bob_id, carol_id = user("alice"), user("bob"), user("carol")
    room = await create_room(token_server, alice_id, "secret plans", True, [bob_id])
    assert room == {
        "id": room["id"],
        "name": "secret plans",
        "private": True,
        "created_by": alice_id,
        "created_at": room["created_at"],
        "members": sorted([alice_id, bob_id]),
        "member_count": 2,
        "topic": "",
        "kind": "room",
        "archived_at": None,
        "role": None,
    }
    room_id = room["id"]
    alice: Client = await connect_token(alice_id)
    bob: Client = await connect_token(bob_id)
    carol: Client = await connect_token(carol_id)

    # Members join and talk.
    assert users(await alice.join(room_id)) == [alice_id]
    assert users(await bob.join(room_id)) == sorted([alice_id, bob_id])
    await alice.recv("user_joined")
    sent = await alice.chat(room_id, "members only")
    assert (await bob.recv("chat"))["payload"] == sent

    # Carol is refused everywhere and learns nothing.
    await carol.send("join_room", {"room_id": room_id})
    error = await carol.expect_error("forbidden", "join_room")
    assert str(room_id) in error["message"]
    await carol.send("chat", {"room_id": room_id, "content": "let me in"})
    await carol.expect_error("forbidden", "chat")
    await carol.sync()
    for path in ("messages", "users"):
        url = f"{token_server.http}/api/rooms/{room_id}/{path}"
        status, _, body = await http_request("GET", url, headers=bearer(carol_id))
        assert (status, body["error"]["code"]) == (403, "forbidden"), body
        status, _, body = await http_request("GET", url, headers=bearer(bob_id))
        assert status == 200, body
    listed = await all_rooms(token_server, headers=bearer(carol_id))
    assert room_id not in [r["id"] for r in listed]
    mine = [r for r in await all_rooms(token_server, headers=bearer(bob_id)) if r["id"] == room_id]
    assert mine == [room]

    # Members see the history; nothing Carol tried is in it; nobody heard from her.
    status, _, page = await http_request(
        "GET", f"{token_server.http}/api/rooms/{room_id}/messages", headers=bearer(bob_id)
    )
    assert [m["content"] for m in page["messages"]] == ["members only"]
    status, _, online = await http_request(
        "GET", f"{token_server.http}/api/rooms/{room_id}/users", headers=bearer(alice_id)
    )
    assert users(online) == sorted([alice_id, bob_id])
    await bob.expect_silence(0.1)


async def test_public_room_created_over_http_admits_anyone(
    token_server: ServerProcess, connect_token: Callable[..., Any], user: UserName
) -> None:
    room = await create_room(token_server, user("alice"), "lobby", False, [user("bob")])
    # Members are only kept for private rooms.
    assert (room["private"], room["members"]) == (False, [])
    carol: Client = await connect_token(user("carol"))
    assert users(await carol.join(room["id"])) == [user("carol")]
    status, _, page = await http_request(
        "GET",
        f"{token_server.http}/api/rooms/{room['id']}/messages",
        headers=bearer(user("carol")),
    )
    assert (status, page) == (200, {"messages": [], "next_before": None, "next_after": None})


# -- open mode's bind guard ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param(("--host", "0.0.0.0"), {}, id="flag-any-ipv4"),
        pytest.param(("--host", "::"), {}, id="flag-any-ipv6"),
        pytest.param(("--host", "192.0.2.1"), {}, id="flag-public-address"),
        pytest.param(("--host", "example.com"), {}, id="flag-hostname"),
        pytest.param((), {"ROOMCAST_HOST": "0.0.0.0"}, id="env-any-ipv4"),
        pytest.param(
            ("--host", "0.0.0.0"), {"ROOMCAST_AUTH_SECRET": ""}, id="empty-secret-is-open-mode"
        ),
    ],
)
def test_open_mode_refuses_a_non_loopback_bind(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    result = run_cli(
        "serve",
        "--port",
        str(free_port()),
        "--database",
        f"sqlite:///{tmp_path / 'roomcast.db'}",
        *args,
        env=clean_env(**env),
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith("roomcast: open mode"), result.stderr
    assert "loopback" in result.stderr
    assert "--insecure-open" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "roomcast.db").exists()


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param(("--host", "0.0.0.0", "--insecure-open"), {}, id="insecure-open-flag"),
        pytest.param((), {"ROOMCAST_HOST": "0.0.0.0", "ROOMCAST_INSECURE_OPEN": "1"}, id="env"),
        pytest.param(("--host", "0.0.0.0", "--auth-secret", SECRET), {}, id="token-mode"),
    ],
)
async def test_non_loopback_bind_starts_when_allowed(
    tmp_db: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    server = ServerProcess(tmp_db, *args, env=clean_env(**env)).start()
    try:
        status, _, body = await http_request("GET", f"{server.http}/health")
        assert (status, body["status"]) == (200, "ok")
    finally:
        assert server.stop() == 0


# -- settings from the environment --------------------------------------------------------


def wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not become healthy")


async def test_settings_come_from_roomcast_environment_variables(
    tmp_path: Path, user: UserName
) -> None:
    port = free_port()
    database = tmp_path / "from-env.db"
    env = clean_env(
        ROOMCAST_HOST="127.0.0.1",
        ROOMCAST_PORT=str(port),
        ROOMCAST_DATABASE=f"sqlite:///{database}",
        ROOMCAST_AUTH_SECRET=SECRET,
        ROOMCAST_MAX_CONTENT_CHARS="10",
        ROOMCAST_HISTORY_PAGE_MAX="5",
        ROOMCAST_LOG_LEVEL="warning",
    )
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "roomcast", "serve"], env=env, stdout=log, stderr=log
    )
    http = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, f"{http}/health")
        assert database.exists()
        # Token mode, from ROOMCAST_AUTH_SECRET.
        refused = await Client.connect(f"{http}/ws", user("alice"), expect_connected=False)
        await refused.expect_error("unauthenticated")
        await expect_close(refused, 1008)
        await refused.close()
        # ROOMCAST_HISTORY_PAGE_MAX bounds the page size.
        room = await create_room_at(http, user("alice"))
        url = f"{http}/api/rooms/{room}/messages"
        assert (await http_request("GET", f"{url}?limit=5", headers=bearer(user("alice"))))[
            0
        ] == 200
        assert (await http_request("GET", f"{url}?limit=6", headers=bearer(user("alice"))))[
            0
        ] == 400
        # ROOMCAST_MAX_CONTENT_CHARS bounds chat messages.
        alice = await Client.connect(f"{http}/ws", token=token(user("alice")))
        try:
            await alice.join(room)
            await alice.send("chat", {"room_id": room, "content": "x" * 11})
            await alice.expect_error("too_large", "chat")
            assert (await alice.chat(room, "y" * 10))["content"] == "y" * 10
        finally:
            await alice.close()
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
        log.close()
    # ROOMCAST_LOG_LEVEL=warning: no info lines.
    assert "level=INFO" not in (tmp_path / "server.log").read_text()


async def create_room_at(http: str, owner: str) -> int:
    status, _, room = await http_request(
        "POST", f"{http}/api/rooms", json_body={"name": "env"}, headers=bearer(owner)
    )
    assert status == 201, room
    room_id: int = room["id"]
    return room_id


async def test_command_line_flags_win_over_environment_variables(tmp_db: Path) -> None:
    # ServerProcess passes --port and --database; the environment says otherwise.
    env = clean_env(
        ROOMCAST_PORT=str(free_port()),
        ROOMCAST_DATABASE=f"sqlite:///{tmp_db.with_name('ignored.db')}",
        ROOMCAST_MAX_CONTENT_CHARS="10",
    )
    server = ServerProcess(tmp_db, "--max-content-chars", "20", env=env).start()
    try:
        assert not tmp_db.with_name("ignored.db").exists()
        assert tmp_db.exists() or server.cluster is not None
        alice = await Client.connect(server.ws_url, "alice")
        try:
            await alice.join(1)
            assert (await alice.chat(1, "z" * 20))["content"] == "z" * 20
            await alice.send("chat", {"room_id": 1, "content": "z" * 21})
            await alice.expect_error("too_large", "chat")
        finally:
            await alice.close()
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--workers", "2"), "--workers needs --broker"),
        (("--workers", "0"), "workers must be at least 1"),
        (("--broker", "redis://127.0.0.1:6379/0"), "--broker needs a PostgreSQL --database"),
        (
            ("--broker", "amqp://127.0.0.1", "--database", "postgresql://127.0.0.1/test"),
            "unsupported broker URL",
        ),
        (("--node-ttl", "0"), "must be positive"),
        (("--gap-wait", "-1"), "must be positive"),
    ],
)
def test_impossible_cluster_settings_are_refused_before_start(
    args: tuple[str, ...], message: str
) -> None:
    result = run_cli("serve", *args)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_or_broker_at_start_is_reported_without_a_traceback() -> None:
    port = str(free_port())
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = run_cli(
        "serve", "--port", port,
        "--database", f"postgresql://postgres@{closed}/test", "--broker", REDIS_URL,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert "cannot start: PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr
    schema = f"t_start_{free_port()}"
    try:
        result = run_cli(
            "serve", "--port", port,
            "--database", f"{POSTGRES_URL}?search_path={schema}",
            "--broker", f"redis://{closed}/0",
        )  # fmt: skip
        assert result.returncode == 1, result
        assert "cannot start: Redis" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        drop_cluster_state(schema)


def test_bad_environment_value_is_reported_like_a_bad_flag(tmp_path: Path) -> None:
    result = run_cli("serve", env=clean_env(ROOMCAST_PORT="abc"))
    assert result.returncode == 2, result
    assert "ROOMCAST_PORT" in result.stderr
    assert "Traceback" not in result.stderr
