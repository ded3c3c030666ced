"""Who is online, and with which status.

A user is online while at least one of their connections is open. The status
they chose (online, away, busy, offline to appear invisible) is per user, not
per connection, so every tab shows the same.
"""

from __future__ import annotations

from roomcast.protocol import Status


class PresenceBook:
    def __init__(self) -> None:
        self._connections: dict[str, int] = {}
        self._status: dict[str, Status] = {}

    def connect(self, user_id: str) -> bool:
        """Count a new connection; returns whether the user just came online."""
        count = self._connections.get(user_id, 0) + 1
        self._connections[user_id] = count
        if count == 1:
            self._status[user_id] = "online"
        return count == 1

    def disconnect(self, user_id: str) -> bool:
        """Count a closed connection; returns whether it was the user's last."""
        count = self._connections[user_id] - 1
        if count:
            self._connections[user_id] = count
            return False
        del self._connections[user_id]
        del self._status[user_id]
        return True

    def set_status(self, user_id: str, status: Status) -> bool:
        """Returns whether the status changed."""
        if self._status.get(user_id) == status:
            return False
        self._status[user_id] = status
        return True

    def status(self, user_id: str) -> Status:
        return self._status.get(user_id, "offline")

    def is_online(self, user_id: str) -> bool:
        return user_id in self._connections

    def user_count(self) -> int:
        return len(self._connections)
