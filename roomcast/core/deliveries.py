"""What the core asks the transport to send.

The core never sends anything itself; it returns these values. A delivery to
a room is resolved to the room's connections when it is sent, so that one
encoded frame can be shared by every member.
"""

from __future__ import annotations

import msgspec

from roomcast.protocol import Event


class ToConnections(msgspec.Struct, frozen=True):
    conn_ids: tuple[str, ...]
    event: Event


class ToRoom(msgspec.Struct, frozen=True):
    room_id: int
    event: Event
    # Members who must not receive it (the sender of a typing indicator).
    except_user: str | None = None


Delivery = ToConnections | ToRoom
