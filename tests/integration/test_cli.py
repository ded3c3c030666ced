"""``python -m roomcast`` as a new user meets it: every mistake is one line and an exit code.

Exit status 2 is a bad flag, variable or setting; 1 is a server that cannot start.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import jwt
import pytest

from roomcast.config import Settings
from tests.harness.backends import CLUSTER, CLUSTERS_USED, cluster_args
from tests.harness.client import Client
from tests.harness.http import http_json
from tests.harness.server import ServerProcess

SECRET = "a-test-secret-of-32-bytes-or-more!"


def roomcast(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    return subprocess.run(
        [sys.executable, "-m", "roomcast", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**clean, **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert text in result.stderr, result.stderr
    assert result.returncode == code, result


@pytest.mark.parametrize(
    ("args", "env", "text"),
    [
        (
            ["serve", "--database", "mysql://root@127.0.0.1/chat"],
            {},
            "unsupported database URL mysql://",
        ),
        (
            ["migrate", "--database", "mysql://root@127.0.0.1/chat"],
            {},
            "unsupported database URL mysql://",
        ),
        (["serve", "--database", "sqlite://"], {}, "SQLite needs a file path"),
        (
            ["serve", "--log-level", "loud"],
            {},
            "unknown log level 'loud' (expected debug, info, warning, error)",
        ),
        (["migrate", "--log-level", "loud"], {}, "unknown log level 'loud'"),
        (["serve"], {"ROOMCAST_LOG_LEVEL": "loud"}, "unknown log level 'loud'"),
        (["serve", "--port", "abc"], {}, "argument --port: invalid int value: 'abc'"),
        (["serve"], {"ROOMCAST_PORT": "abc"}, "ROOMCAST_PORT='abc': expected an integer"),
        (["serve", "--port", "70000"], {}, "port 70000 is out of range"),
        (["serve", "--max-wal-bytes", "4096"], {}, "max_wal_bytes must be at least 65536"),
        (["migrate", "--port", "3000"], {}, "unrecognized arguments: --port"),
        (
            ["token", "alice"],
            {},
            "a token needs the server's auth secret (--auth-secret or ROOMCAST_AUTH_SECRET)",
        ),
        (
            ["token", "alice", "--auth-secret", SECRET, "--ttl", "0"],
            {},
            "--ttl must be at least 1 second",
        ),
        (
            ["token", "al\x01ice", "--auth-secret", SECRET],
            {},
            "user_id: must not contain control characters (U+0001)",
        ),
        (
            ["token", "\u202eecila", "--auth-secret", SECRET],
            {},
            "user_id: must not contain invisible or bidi control characters (U+202E)",
        ),
        (["token", "--auth-secret", SECRET], {}, "the following arguments are required: USER"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(
    args: list[str], env: dict[str, str], text: str, tmp_path: Path
) -> None:
    one_line_error(roomcast(*args, cwd=tmp_path, env=env), 2, text)
    assert list(tmp_path.iterdir()) == []  # nothing was created on the way


def backend(tmp_path: Path, name: str) -> list[str]:
    if not CLUSTER:
        return ["--database", f"sqlite:///{tmp_path / 'roomcast.db'}"]
    CLUSTERS_USED.add(name)
    return cluster_args(name)


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # --log-level warning: a cluster node logs its broker connection at info.
        result = roomcast(
            "serve", "--port", str(port), "--log-level", "warning",
            *backend(tmp_path, "t_cli_port_in_use"),
            cwd=tmp_path,
        )  # fmt: skip
    one_line_error(
        result, 1, f"roomcast: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_an_unreachable_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/test"
    one_line_error(
        roomcast("serve", "--database", url, cwd=tmp_path), 1, "roomcast: cannot start: PostgreSQL"
    )
    one_line_error(
        roomcast("migrate", "--database", url, cwd=tmp_path),
        1,
        "roomcast: cannot migrate: PostgreSQL",
    )


def test_serve_help_names_every_environment_variable(tmp_path: Path) -> None:
    result = roomcast("serve", "--help", cwd=tmp_path)
    assert result.returncode == 0, result
    text = " ".join(result.stdout.split())  # argparse wraps long lines
    for field in fields(Settings):
        assert f"ROOMCAST_{field.name.upper()}" in text, field.name


def test_migrate_help_lists_only_what_migrate_reads(tmp_path: Path) -> None:
    result = roomcast("migrate", "--help", cwd=tmp_path)
    assert result.returncode == 0, result
    flags = {word.strip("[],") for word in result.stdout.split() if word.startswith(("--", "[--"))}
    assert flags == {"--help", "--database", "--log-level"}, result.stdout
    assert "ROOMCAST_DATABASE" in result.stdout and "ROOMCAST_LOG_LEVEL" in result.stdout


@pytest.mark.parametrize("secret_from", ["flag", "environment"])
async def test_a_printed_token_is_accepted_by_a_server_in_token_mode(
    secret_from: str, tmp_db: Path
) -> None:
    if secret_from == "flag":
        result = roomcast(
            "token", "alice", "--ttl", "600", "--auth-secret", SECRET, cwd=tmp_db.parent
        )
    else:
        result = roomcast(
            "token",
            "alice",
            "--ttl",
            "600",
            cwd=tmp_db.parent,
            env={"ROOMCAST_AUTH_SECRET": SECRET},
        )
    assert (result.returncode, result.stderr) == (0, ""), result
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 600
    server = ServerProcess(tmp_db, "--auth-secret", SECRET).start()
    try:
        # Over HTTP (Bearer) and over the WebSocket (?token=).
        status, room = await http_json(
            "POST",
            f"{server.http}/api/rooms",
            {"name": "made with a printed token"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert (status, room["created_by"]) == (201, "alice"), room
        alice = await Client.connect(server.ws_url, token=token)
        assert alice.connected["user_id"] == "alice"
        assert (await alice.join(room["id"]))["users"] == [{"user_id": "alice", "status": "online"}]
        await alice.close()
    finally:
        assert server.stop() == 0


def test_a_short_secret_warns_in_one_line(tmp_path: Path) -> None:
    result = roomcast("token", "alice", "--auth-secret", "short", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.count(".") == 2, result
    assert result.stderr.startswith("roomcast: warning: ") and result.stderr.count("\n") == 1
