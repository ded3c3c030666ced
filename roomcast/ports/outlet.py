"""The outlet port: how the node hands encoded events to its connections' sockets.

The node encodes each event once (JSON) and says who gets it; the transport
behind this port frames it (WebSocket) and batches the writes. Keeping the
framing on the far side is what lets the node not import the transport.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Writable(Protocol):
    """The socket side of one connection (an asyncio transport)."""

    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...
    def abort(self) -> None: ...


class Outlet(Protocol):
    def add(self, conn_id: str, transport: Writable) -> None:
        """Start sending to a connection."""

    def remove(self, conn_id: str) -> None:
        """Send nothing more to it (what is queued is dropped)."""

    def flush_connection(self, conn_id: str) -> None:
        """Write what is queued for it now."""

    def send_text(self, conn_ids: Iterable[str], payload: bytes) -> None:
        """One text message to these connections, after what each already has queued."""

    def send_room_text(self, room_id: int, conn_ids: Iterable[str], payload: bytes) -> None:
        """One text message to a room's members (``conn_ids``): shared by all of them."""

    def membership_changed(self, room_id: int) -> None:
        """The room's member list changed: what is batched for it is for the old list."""
