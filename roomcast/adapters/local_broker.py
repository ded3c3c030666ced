"""The in-process broker: one node, so publishing is delivering."""

from __future__ import annotations

from roomcast.ports.broker import FrameSink


class LocalBroker:
    def __init__(self) -> None:
        self._sink: FrameSink | None = None

    def attach(self, sink: FrameSink) -> None:
        self._sink = sink

    def publish_room(self, room_id: int, frame: bytes, except_user: str | None = None) -> None:
        if self._sink is not None:
            self._sink.deliver_room(room_id, frame, except_user)

    def publish_connections(self, conn_ids: tuple[str, ...], frame: bytes) -> None:
        if self._sink is not None:
            self._sink.deliver_connections(conn_ids, frame)

    async def close(self) -> None:
        self._sink = None
