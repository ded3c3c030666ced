"""Who is online, and with which status.

A user is online while at least one of their connections is open. What the
others see is per user, not per connection, so every tab shows the same:

* a status the user *chose* (away, busy, dnd, or offline to appear
  invisible), with an optional text, which may end by itself at ``until``;
* otherwise the automatic one: ``online``, and ``away`` once none of their
  connections has been active (a message sent, a client's ``activity``) for
  ``away_after``. A chosen status is never overridden by the automatic one.

Times are wall-clock milliseconds as the log carries them, so every replica
decides the same at the same entry.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from roomcast.protocol import Status


@dataclass(slots=True)
class UserPresence:
    connections: int = 0
    chosen: Status | None = None  # None: automatic
    text: str | None = None
    until: int | None = None  # when the chosen status ends by itself
    last_active: int | None = None  # the last activity others are shown
    idle_since: int | None = None  # what automatic away counts from
    away: bool = False  # automatic away
    scheduled: int | None = None  # the user's entry in the book's deadlines

    @property
    def status(self) -> Status:
        if self.chosen is not None:
            return self.chosen
        return "away" if self.away else "online"

    def deadline(self, away_after_ms: int) -> int | None:
        """When this user's status next changes by itself, if it will."""
        times = []
        if self.chosen is not None and self.until is not None:
            times.append(self.until)
        if not self.away and self.idle_since is not None:
            times.append(self.idle_since + away_after_ms)
        return min(times) if times else None


class PresenceBook:
    def __init__(self, away_after_ms: int = 300_000) -> None:
        self.away_after_ms = away_after_ms
        self._users: dict[str, UserPresence] = {}
        # (deadline, user), the nearest first. A user's entry is the one whose
        # time is their ``scheduled``; others are stale and skipped. Activity
        # does not push a new entry (a message would cost a heap push): when
        # the old one comes due, the user is looked at and scheduled anew.
        self._deadlines: list[tuple[int, str]] = []

    def _schedule(self, user_id: str, user: UserPresence) -> None:
        due = user.deadline(self.away_after_ms)
        if user.scheduled is not None and due is not None and user.scheduled <= due:
            return  # the entry there comes first and reschedules when due
        user.scheduled = due
        if due is not None:
            heapq.heappush(self._deadlines, (due, user_id))

    def connect(self, user_id: str) -> bool:
        """Count a new connection; returns whether the user just came online."""
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = UserPresence()
        user.connections += 1
        return user.connections == 1

    def disconnect(self, user_id: str) -> bool:
        """Count a closed connection; returns whether it was the user's last
        (and with it their status goes: the next connection starts afresh)."""
        user = self._users[user_id]
        user.connections -= 1
        if user.connections:
            return False
        del self._users[user_id]
        return True

    def choose(
        self, user_id: str, status: Status, text: str | None = None, until: int | None = None
    ) -> bool:
        """The user chose a status (``online``: back to the automatic one);
        returns whether what others see changed."""
        user = self._users[user_id]
        before = (user.status, user.text)
        user.chosen = None if status == "online" else status
        user.text = text
        user.until = None if user.chosen is None else until
        self._schedule(user_id, user)
        return (user.status, user.text) != before

    def restore(
        self, user_id: str, last_active: int | None, idle_since: int | None, away: bool
    ) -> bool:
        """Take a snapshot's activity as it was (no activity happens here);
        returns whether what others see changed."""
        user = self._users[user_id]
        before = user.status
        user.last_active, user.idle_since, user.away = last_active, idle_since, away
        user.scheduled = None
        self._schedule(user_id, user)
        return user.status != before

    def active(self, user_id: str, wall: int, shown: bool = True) -> bool:
        """Activity on one of the user's connections; returns whether their status
        changed (automatic away ends). Connecting is not ``shown`` (a phone may
        reconnect in a pocket) but starts the count towards away.

        Called for every message: a user already scheduled keeps their entry
        (it comes due no later than the new deadline, and reschedules then).
        """
        user = self._users.get(user_id)
        if user is None:
            return False
        if user.idle_since is None or wall > user.idle_since:
            user.idle_since = wall
        if shown:
            if user.last_active is None or wall > user.last_active:
                user.last_active = wall
            if user.away:
                user.away = False
                self._schedule(user_id, user)
                return user.chosen is None
        if user.scheduled is None:
            self._schedule(user_id, user)
        return False

    def time_passed(self, wall: int) -> list[str]:
        """Users whose status changed by itself at ``wall``: a chosen status that
        ended, or the automatic one that went away."""
        changed: list[str] = []
        heap = self._deadlines
        while heap and heap[0][0] <= wall:
            due, user_id = heapq.heappop(heap)
            user = self._users.get(user_id)
            if user is None or user.scheduled != due:
                continue  # stale
            user.scheduled = None
            before = (user.status, user.text)
            if user.chosen is not None and user.until is not None and user.until <= wall:
                user.chosen, user.text, user.until = None, None, None
            idle_since = user.idle_since
            if not user.away and idle_since is not None and idle_since + self.away_after_ms <= wall:
                user.away = True
            self._schedule(user_id, user)
            if (user.status, user.text) != before:
                changed.append(user_id)
        return changed

    def next_deadline(self) -> int | None:
        """The wall time of the next look at a user's status (it may find that
        their activity put the change off)."""
        heap = self._deadlines
        while heap:
            due, user_id = heap[0]
            user = self._users.get(user_id)
            if user is not None and user.scheduled == due:
                return due
            heapq.heappop(heap)  # stale
        return None

    def status(self, user_id: str) -> Status:
        user = self._users.get(user_id)
        return "offline" if user is None else user.status

    def view(self, user_id: str) -> UserPresence | None:
        """The user's presence as others see it (None: not connected)."""
        return self._users.get(user_id)

    def is_online(self, user_id: str) -> bool:
        return user_id in self._users

    def user_count(self) -> int:
        return len(self._users)
