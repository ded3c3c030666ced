"""``roomcast serve``, ``roomcast migrate`` and ``roomcast token``.

Every flag has a ``ROOMCAST_<NAME>`` environment variable (``--auth-secret``
is ``ROOMCAST_AUTH_SECRET``); a flag given on the command line wins.

Exit status: 0 after a clean shutdown; 1 when the server cannot start (the
port is taken, the database or broker does not answer); 2 for a bad flag,
environment variable or setting. Each failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import warnings
from collections.abc import Collection, Sequence
from dataclasses import fields
from typing import NoReturn

from roomcast import __version__
from roomcast.config import Settings
from roomcast.logs import configure

_HELP = {
    "host": "address to listen on",
    "port": "port for HTTP and WebSocket (/ws)",
    "database": "database URL: sqlite:///roomcast.db or postgresql://user@host/db",
    "log_level": "debug, info, warning or error",
    "auth_secret": "HS256 secret for JWTs (?token= / Bearer); without it: open mode",
    "insecure_open": "allow open mode on a non-loopback address",
    "idle_timeout": "seconds of silence (no frame, no pong) before a connection is closed",
    "head_timeout": "seconds a connection has to send a complete request head",
    "body_timeout": "seconds an HTTP request has to send its body (then 408)",
    "typing_timeout": "seconds after the last is_typing:true before typing ends by itself",
    "away_after": "seconds without activity before a user's status is away by itself",
    "max_message_bytes": "largest frame a client may send",
    "max_content_chars": "longest chat message",
    "history_page_max": "largest history page over HTTP",
    "commit_max_batch": "most writes in one group commit",
    "commit_linger_ms": "most milliseconds a commit waits while more writes keep arriving",
    "db_timeout": "seconds a write waits for a locked database before it fails",
    "max_wal_bytes": "SQLite: size the write-ahead log is kept under (emptied past half of it)",
    "max_send_buffer": "unsent bytes a connection may hold before it is cut",
    "ring_timeout": "seconds a call rings before it ends with no_answer",
    "allow_calls_outside_rooms": "let users call people they share no room with",
    "max_signal_bytes": "largest SDP/ICE data relayed in a webrtc message",
    "stun_urls": "comma-separated STUN URLs for /api/ice-servers",
    "turn_urls": "comma-separated TURN URLs for /api/ice-servers",
    "turn_secret": "TURN REST API shared secret (coturn use-auth-secret)",
    "turn_ttl": "seconds a TURN credential stays valid",
    "rate_limits": 'per-connection limits, "off" or e.g. "chat=5/30,typing=5/20" (rate/burst)',
    "flood_strikes": "refused messages a connection may collect before it is cut off (1008)",
    "max_rooms_per_connection": "rooms one connection may be in",
    "max_rooms_per_user": "rooms one user may create in all (counted in the database)",
    "list_page_max": "largest limit of the room, member, user and call lists over HTTP",
    "files": "directory of shared files' bytes",
    "file_max_bytes": "largest file one upload may be",
    "file_quota_bytes": "bytes one user's kept files may take in all",
    "uploads_per_minute": "uploads one user may make a minute",
    "file_link_secret": "secret signing file links for <img>/<video> (random per process if unset)",
    "file_link_ttl": "seconds a signed file link stays valid",
    "resume_max_messages": "missed messages replayed by a join_room with since",
    "max_connections_per_user": "open connections one user may have",
    "max_connections_per_ip": "open connections from one address",
    "max_connections": "open connections in all; more are refused with 1013 (HTTP 503)",
    "reserved_descriptors": "file descriptors kept free below the open-file limit",
    "broker": "Redis URL (redis://host:6379/0): run as one node of a cluster",
    "broker_prefix": "prefix of every Redis key (several clusters can share one Redis)",
    "node_ttl": "seconds without a liveness refresh before a node is declared gone",
    "gap_wait": "seconds a message waits for a missing predecessor before a database read",
    "log_timeout": "seconds a join or leave may wait for the cluster's log",
    "workers": "server processes sharing the port on this machine (needs --broker)",
    "reuse_port": "listen with SO_REUSEPORT (set for each worker)",
}


#: The settings ``migrate`` reads (``serve`` reads them all).
_MIGRATE_SETTINGS = ("database", "log_level")

#: A token's lifetime when ``--ttl`` is not given (seconds).
_TOKEN_TTL = 24 * 3600


def _env_name(name: str) -> str:
    return f"ROOMCAST_{name.upper()}"


def _env_default(name: str, default: object) -> object:
    raw = os.environ.get(_env_name(name))
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    kind = type(default) if isinstance(default, int | float) else None
    if kind is None:
        return raw
    try:
        return kind(raw)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise BadEnvironment(f"{_env_name(name)}={raw!r}: expected {expected}") from None


class BadEnvironment(Exception):
    """A ``ROOMCAST_*`` variable that cannot be read; reported like a bad flag."""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line: ``serve``'s full usage would be forty lines of flags."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_settings(parser: argparse.ArgumentParser, only: Collection[str] | None = None) -> None:
    defaults = Settings()
    for f in fields(Settings):
        if only is not None and f.name not in only:
            continue
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        value = _env_default(f.name, default)
        text = _HELP[f.name].replace("%", "%%")
        if isinstance(default, bool):
            help_text = f"{text} (env {_env_name(f.name)})"
            parser.add_argument(flag, action="store_true", default=value, help=help_text)
        else:
            kind = type(default) if default is not None else str
            help_text = f"{text} (env {_env_name(f.name)}; default: {default})"
            parser.add_argument(flag, type=kind, default=value, help=help_text)


def _settings(args: argparse.Namespace) -> Settings:
    values = {f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)}
    return Settings(**values)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="roomcast", description="Real-time chat and calls.")
    parser.add_argument("--version", action="version", version=f"roomcast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_settings(commands.add_parser("serve", help="run the server"))
    _add_settings(
        commands.add_parser("migrate", help="bring the database schema up to date"),
        _MIGRATE_SETTINGS,
    )
    token = commands.add_parser(
        "token",
        help="print a token (JWT) for a user, signed with the auth secret",
        description="Print a token that a server with the same auth secret accepts for USER "
        "(?token= on the WebSocket, Authorization: Bearer over HTTP).",
    )
    token.add_argument("user", metavar="USER", help="the user id the token names (its sub)")
    token.add_argument(
        "--ttl",
        type=int,
        default=_TOKEN_TTL,
        help=f"seconds until the token expires (default: {_TOKEN_TTL})",
    )
    token.add_argument(
        "--auth-secret",
        default=_env_default("auth_secret", None),
        help="the server's HS256 secret (env ROOMCAST_AUTH_SECRET)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = _parser()
    except BadEnvironment as exc:
        print(f"roomcast: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    settings = _settings(args)
    try:
        settings.check()
    except ValueError as exc:
        print(f"roomcast: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        return _token(settings, args.user, args.ttl)
    configure(settings.log_level)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if settings.workers > 1:
        from roomcast.workers import run_workers

        return run_workers(settings.workers, list(argv if argv is not None else sys.argv[1:]))
    from roomcast.ports.broker import BrokerUnavailable
    from roomcast.ports.store import StoreUnavailable
    from roomcast.server import CannotListen, serve

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(serve(settings))
    except CannotListen as exc:
        print(f"roomcast: {exc}", file=sys.stderr)
        return 1
    except (StoreUnavailable, BrokerUnavailable) as exc:
        print(f"roomcast: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


async def _migrate(settings: Settings) -> int:
    from roomcast.adapters.stores import migrate
    from roomcast.ports.store import StoreUnavailable

    try:
        done = await migrate(settings.database)
    except StoreUnavailable as exc:
        print(f"roomcast: cannot migrate: {exc}", file=sys.stderr)
        return 1
    print(f"roomcast: {done}")
    return 0


def _token(settings: Settings, user: str, ttl: int) -> int:
    from roomcast.auth import AuthError, issue_token

    if not settings.auth_secret:
        print(
            "roomcast: a token needs the server's auth secret "
            "(--auth-secret or ROOMCAST_AUTH_SECRET)",
            file=sys.stderr,
        )
        return 2
    if ttl < 1:
        print(f"roomcast: --ttl must be at least 1 second, not {ttl}", file=sys.stderr)
        return 2
    try:
        # PyJWT warns about short secrets with a source line; one line here instead.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            token = issue_token(settings.auth_secret, user, ttl, time.time())
    except AuthError as exc:
        print(f"roomcast: {exc}", file=sys.stderr)
        return 2
    for warning in caught:
        print(f"roomcast: warning: {warning.message}", file=sys.stderr)
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
