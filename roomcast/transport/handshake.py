"""The WebSocket opening handshake (RFC 6455 section 4), without I/O.

roomcast answers the upgrade of ``/ws`` itself, before any HTTP framework
sees the connection (see :class:`roomcast.transport.front_door.FrontDoor`):
:func:`parse_upgrade` recognises a complete, valid upgrade request and
:func:`switching_protocols` is the answer. Anything else, including an
upgrade request with a missing or wrong header, is not ours and goes to
aiohttp unchanged, which answers it as an ordinary HTTP request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: The longest request head read before deciding; longer ones go to aiohttp
#: (which refuses them). Browsers send every cookie of the origin with the
#: upgrade, so this is far above a typical head of under 1 KiB.
MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A valid WebSocket upgrade request."""

    path: str
    #: The query string's parameters, the first value of each name.
    query: dict[str, str]
    key: str


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def parse_upgrade(head: bytes, path: str) -> Upgrade | None:
    """The upgrade request of ``path`` in ``head`` (the bytes before the blank line).

    None when it is not one: another method, path or HTTP version, or a
    header the handshake needs is missing or wrong.
    """
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        return None
    request_line, *header_lines = text.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1":
        return None
    target_path, _, query_string = parts[1].partition("?")
    if unquote(target_path) != path:
        return None
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon or name != name.strip():
            return None  # malformed: let the HTTP parser reject it properly
        name = name.lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        return None
    if "upgrade" not in _tokens(headers.get("connection", "")):
        return None
    if headers.get("sec-websocket-version") != "13":
        return None
    key = headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    query: dict[str, str] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        query.setdefault(name, value)
    return Upgrade(path, query, key)


def switching_protocols(key: str) -> bytes:
    """The 101 response that completes the handshake for ``key``."""
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n"
        "\r\n"
    ).encode()
