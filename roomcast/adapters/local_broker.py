"""The in-process broker: one node, so appending to the log is applying it."""

from __future__ import annotations

from roomcast.ports.broker import BrokerState, LogEntry, Replica


class LocalBroker:
    node_id = "local"

    def __init__(self) -> None:
        self._replica: Replica | None = None

    def attach(self, replica: Replica) -> None:
        self._replica = replica

    async def start(self) -> None:
        pass

    def append(self, entry: LogEntry) -> None:
        if self._replica is not None:
            self._replica.apply(entry, self.node_id)

    def state(self) -> BrokerState:
        return BrokerState.LOCAL

    def pending(self) -> int:
        return 0  # applied as they are appended

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        self._replica = None
