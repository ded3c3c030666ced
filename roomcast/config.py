"""Server settings, from command-line flags or ``ROOMCAST_*`` environment variables."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from roomcast.core.limits import parse_rates

_LOG_LEVELS = ("debug", "info", "warning", "error")

#: A smaller write-ahead log bound would checkpoint after nearly every write.
MIN_WAL_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 3000
    database: str = "sqlite:///roomcast.db"
    log_level: str = "info"
    # HS256 secret for JWTs; without one the server runs in open mode.
    auth_secret: str | None = None
    # Open mode on a non-loopback address must be asked for explicitly.
    insecure_open: bool = False
    # A connection silent this long (no frame, no pong to our pings) is closed.
    idle_timeout: float = 45.0
    # Seconds a connection has to send a complete request head (from its start,
    # or from the end of its previous request) and an HTTP request its body.
    head_timeout: float = 10.0
    body_timeout: float = 10.0
    typing_timeout: float = 3.0
    # Seconds without activity on any connection before a user is away by itself.
    away_after: float = 300.0
    max_message_bytes: int = 64 * 1024
    max_content_chars: int = 4000
    history_page_max: int = 100
    commit_max_batch: int = 1024
    # How long a commit waits for more writes to share it (milliseconds).
    commit_linger_ms: float = 1.0
    # How long a write waits for a locked or busy database before it fails
    # (its sender gets an "internal" error; nothing unstored is broadcast).
    db_timeout: float = 5.0
    # SQLite: the write-ahead log is kept under this size (past half of it, it
    # is checkpointed and truncated off the event loop), so sustained writes
    # cannot grow it without bound.
    max_wal_bytes: int = 16 * 1024 * 1024
    # Bytes a connection may have unsent before it is cut as a slow consumer.
    max_send_buffer: int = 4 * 1024 * 1024
    # Calls: how long a call rings, whether caller and callee must share a
    # room, and the largest SDP/ICE payload relayed.
    ring_timeout: float = 30.0
    allow_calls_outside_rooms: bool = False
    max_signal_bytes: int = 32 * 1024
    # ICE servers handed to clients: comma-separated URLs; TURN credentials
    # are derived from turn_secret and expire after turn_ttl seconds.
    stun_urls: str = ""
    turn_urls: str = ""
    turn_secret: str | None = None
    turn_ttl: int = 24 * 3600
    # Rate limits: "off", or overrides like "chat=5/30,typing=5/20" (per second
    # / burst, per connection; a user gets twice that across connections).
    rate_limits: str = "default"
    # Refusals a connection may collect (one forgiven per second) before it is
    # disconnected as a flood (close 1008).
    flood_strikes: int = 50
    max_rooms_per_connection: int = 100
    # Rooms one user may create in all (over HTTP, and by open mode's
    # join_room of a new id); counted in the database.
    max_rooms_per_user: int = 1000
    # The largest page of the room, member, room user and call lists.
    list_page_max: int = 500
    # Shared files: where their bytes are kept, and the limits of uploads.
    files: str = "./roomcast-files"
    file_max_bytes: int = 25 * 2**20
    file_quota_bytes: int = 2**30
    uploads_per_minute: int = 30
    # Signs the links of <img>/<video> (which cannot send a token); a random
    # one per process when unset (set it on every node of a cluster).
    file_link_secret: str | None = None
    file_link_ttl: int = 3600
    # A join_room with "since" replays at most this many missed messages.
    resume_max_messages: int = 200
    max_connections_per_user: int = 20
    max_connections_per_ip: int = 1000
    # Beyond this many connections new ones are refused with close 1013 (HTTP 503).
    max_connections: int = 100_000
    # File descriptors kept free below the process's open-file limit, so that
    # the server can always accept a connection to refuse it properly.
    reserved_descriptors: int = 256
    # Scale-out: a Redis URL makes this process one node of a cluster (with a
    # PostgreSQL database shared by all nodes); every key starts with the prefix.
    broker: str = ""
    broker_prefix: str = "roomcast"
    # A node that has not refreshed its liveness for this long is declared
    # gone: its users go offline everywhere and its calls end.
    node_ttl: float = 10.0
    # How long a message waits for a predecessor before the gap is read from
    # the database (seconds).
    gap_wait: float = 0.2
    # How long a join or leave may wait for the log to apply it before the
    # client gets an "internal" error (seconds).
    log_timeout: float = 10.0
    # Server processes sharing the port on this machine (needs a broker).
    workers: int = 1
    # Let several processes listen on the same port (set for each worker).
    reuse_port: bool = False

    @property
    def open_mode(self) -> bool:
        return not self.auth_secret

    def check(self) -> None:
        """Refuse settings that would be unsafe or cannot work."""
        if self.log_level.lower() not in _LOG_LEVELS:
            raise ValueError(
                f"unknown log level {self.log_level!r} (expected {', '.join(_LOG_LEVELS)})"
            )
        check_database_url(self.database)
        if self.open_mode and not self.insecure_open and not is_loopback(self.host):
            raise ValueError(
                "open mode (no auth secret) only listens on loopback addresses, "
                f"not {self.host!r}; "
                "set an auth secret, or pass --insecure-open to accept anyone as any user"
            )
        if not 0 <= self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if self.resume_max_messages < 1:
            raise ValueError("resume_max_messages must be at least 1")
        if self.max_rooms_per_user < 1 or self.list_page_max < 1:
            raise ValueError("max_rooms_per_user and list_page_max must be at least 1")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.workers > 1 and not self.broker:
            raise ValueError(
                "--workers needs --broker (redis://...) and a PostgreSQL --database: "
                "the processes share state through them"
            )
        if self.broker and not self.broker.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"unsupported broker URL {self.broker!r} (expected redis://host:port/db)"
            )
        if self.broker and not self.database.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "--broker needs a PostgreSQL --database that every node shares, "
                f"not {self.database!r}"
            )
        if self.head_timeout <= 0 or self.body_timeout <= 0:
            raise ValueError("head_timeout and body_timeout must be positive")
        if self.reserved_descriptors < 16:
            raise ValueError("reserved_descriptors must be at least 16")
        if self.max_wal_bytes < MIN_WAL_BYTES:
            raise ValueError(f"max_wal_bytes must be at least {MIN_WAL_BYTES} (64 KiB)")
        if self.node_ttl <= 0 or self.gap_wait <= 0 or self.log_timeout <= 0:
            raise ValueError("node_ttl, gap_wait and log_timeout must be positive")
        if self.rate_limits not in ("off", "default"):
            parse_rates(self.rate_limits)


def sqlite_path(url: str) -> str:
    """``sqlite:///relative.db``, ``sqlite:////abs.db`` or a bare path."""
    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    if url.startswith("sqlite://"):
        path = path.removeprefix("/")
    if not path or path == ":memory:":
        raise ValueError("SQLite needs a file path (the reader and writer share it)")
    return path


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def describe(url: str) -> str:
    """A database or broker for logs and messages: the SQLite path, or the URL without
    its password."""
    if "://" not in url or url.startswith("sqlite://"):
        return sqlite_path(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def check_database_url(url: str) -> None:
    """Refuse a database URL that names neither a SQLite file nor PostgreSQL."""
    if is_postgres(url):
        return
    if "://" in url and not url.startswith("sqlite://"):
        raise ValueError(
            f"unsupported database URL {url.partition('://')[0]}://... "
            "(expected sqlite:///path or postgresql://user@host/database)"
        )
    sqlite_path(url)


def url_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
