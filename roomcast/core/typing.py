"""Typing indicators that can never get stuck.

A client says ``is_typing: true`` and may never say ``false`` (it crashed, the
tab closed, the network dropped). Every ``true`` therefore arms a deadline;
when it passes with no new ``true`` the indicator ends as if the client had
said ``false``. Time is passed in by the caller, so tests control it.
"""

from __future__ import annotations

import heapq

TypingKey = tuple[int, str]  # (room_id, user_id)


class TypingTracker:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._deadlines: dict[TypingKey, float] = {}
        # (deadline, key) entries; stale ones are skipped when popped.
        self._heap: list[tuple[float, TypingKey]] = []

    def start(self, key: TypingKey, now: float) -> bool:
        """Record a ``true``; returns whether the key was not typing before."""
        was_typing = key in self._deadlines
        deadline = now + self.timeout
        self._deadlines[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        return not was_typing

    def stop(self, key: TypingKey) -> bool:
        """Record a ``false``; returns whether the key was typing."""
        return self._deadlines.pop(key, None) is not None

    def is_typing(self, key: TypingKey) -> bool:
        return key in self._deadlines

    def expire(self, now: float) -> list[TypingKey]:
        """End and return every indicator whose deadline has passed."""
        expired: list[TypingKey] = []
        while self._heap and self._heap[0][0] <= now:
            deadline, key = heapq.heappop(self._heap)
            if self._deadlines.get(key) == deadline:
                del self._deadlines[key]
                expired.append(key)
        return expired

    def next_deadline(self) -> float | None:
        while self._heap:
            deadline, key = self._heap[0]
            if self._deadlines.get(key) == deadline:
                return deadline
            heapq.heappop(self._heap)
        return None
