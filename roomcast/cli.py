"""``roomcast serve`` and ``roomcast migrate``.

Every flag has a ``ROOMCAST_<NAME>`` environment variable (``--auth-secret``
is ``ROOMCAST_AUTH_SECRET``); a flag given on the command line wins.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import fields

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
    "typing_timeout": "seconds after the last is_typing:true before typing ends by itself",
    "max_message_bytes": "largest frame a client may send",
    "max_content_chars": "longest chat message",
    "history_page_max": "largest history page over HTTP",
    "commit_max_batch": "most writes in one group commit",
    "commit_linger_ms": "most milliseconds a commit waits while more writes keep arriving",
    "db_timeout": "seconds a write waits for a locked database before it fails",
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
    "resume_max_messages": "missed messages replayed by a join_room with since",
    "max_connections_per_user": "open connections one user may have",
    "max_connections_per_ip": "open connections from one address",
    "max_connections": "open connections in all; more are refused with 1013",
    "broker": "Redis URL (redis://host:6379/0): run as one node of a cluster",
    "broker_prefix": "prefix of every Redis key (several clusters can share one Redis)",
    "node_ttl": "seconds without a liveness refresh before a node is declared gone",
    "gap_wait": "seconds a message waits for a missing predecessor before a database read",
    "log_timeout": "seconds a join or leave may wait for the cluster's log",
    "workers": "server processes sharing the port on this machine (needs --broker)",
    "reuse_port": "listen with SO_REUSEPORT (set for each worker)",
}


def _env_default(name: str, default: object) -> object:
    raw = os.environ.get(f"ROOMCAST_{name.upper()}")
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
        raise BadEnvironment(f"ROOMCAST_{name.upper()}={raw!r}: expected {expected}") from None


class BadEnvironment(Exception):
    """A ``ROOMCAST_*`` variable that cannot be read; reported like a bad flag."""


def _add_settings(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    for f in fields(Settings):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        value = _env_default(f.name, default)
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=value, help=_HELP[f.name])
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(
                flag, type=kind, default=value, help=f"{_HELP[f.name]} (default: {default})"
            )


def _settings(args: argparse.Namespace) -> Settings:
    values = {f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)}
    return Settings(**values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="roomcast", description="Real-time chat and calls.")
    parser.add_argument("--version", action="version", version=f"roomcast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    try:
        _add_settings(commands.add_parser("serve", help="run the server"))
        _add_settings(commands.add_parser("migrate", help="bring the database schema up to date"))
    except BadEnvironment as exc:
        parser.error(str(exc))
    args = parser.parse_args(argv)
    settings = _settings(args)
    configure(settings.log_level)
    try:
        settings.check()
    except ValueError as exc:
        print(f"roomcast: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if settings.workers > 1:
        from roomcast.workers import run_workers

        return run_workers(settings.workers, list(argv if argv is not None else sys.argv[1:]))
    from roomcast.ports.broker import BrokerUnavailable
    from roomcast.ports.store import StoreUnavailable
    from roomcast.server import serve

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(serve(settings))
    except (StoreUnavailable, BrokerUnavailable) as exc:
        print(f"roomcast: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


async def _migrate(settings: Settings) -> int:
    from roomcast.adapters.stores import migrate

    print(f"roomcast: {await migrate(settings.database)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
