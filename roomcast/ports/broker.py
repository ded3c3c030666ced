"""The broker port: how encoded frames reach the connections that should get them.

The service encodes each event once and publishes the frame with its target;
the broker carries it to every node that holds a recipient, and each node
hands it to its local fan-out. In one process this is a direct call
(:mod:`roomcast.adapters.local_broker`); across processes it will be a
pub/sub engine, without the service changing.
"""

from __future__ import annotations

from typing import Protocol


class FrameSink(Protocol):
    """The local side of a node: writes frames to its own connections."""

    def deliver_room(self, room_id: int, frame: bytes, except_user: str | None) -> None: ...

    def deliver_connections(self, conn_ids: tuple[str, ...], frame: bytes) -> None: ...


class Broker(Protocol):
    def attach(self, sink: FrameSink) -> None:
        """Start delivering published frames to this node's sink."""

    def publish_room(self, room_id: int, frame: bytes, except_user: str | None = None) -> None: ...

    def publish_connections(self, conn_ids: tuple[str, ...], frame: bytes) -> None: ...

    async def close(self) -> None: ...
