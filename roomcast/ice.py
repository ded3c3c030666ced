"""ICE servers for ``RTCPeerConnection``, with time-limited TURN credentials.

TURN servers with a shared secret (coturn's ``use-auth-secret``, the "TURN
REST API" scheme) accept a username ``<expiry-unix-time>:<user_id>`` whose
password is ``base64(HMAC-SHA1(secret, username))``. The server hands these
out per user, so the secret itself never reaches a browser and a leaked
credential stops working at its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any


def turn_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def ice_servers(
    user_id: str,
    now: int,
    stun_urls: Sequence[str],
    turn_urls: Sequence[str],
    turn_secret: str | None,
    ttl: int,
) -> dict[str, Any]:
    """The ``{"iceServers": [...]}`` object for ``user_id`` at unix time ``now``."""
    servers: list[dict[str, Any]] = []
    if stun_urls:
        servers.append({"urls": list(stun_urls)})
    if turn_urls and turn_secret:
        username = f"{now + ttl}:{user_id}"
        servers.append(
            {
                "urls": list(turn_urls),
                "username": username,
                "credential": turn_credential(turn_secret, username),
            }
        )
    return {"iceServers": servers}
