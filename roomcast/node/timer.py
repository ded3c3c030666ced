"""One timer for the nearest deadline of every feature (typing, ringing calls).

When it fires, the node appends a :class:`~roomcast.ports.broker.Tick`: time
passes for every replica at the same point of the log, so every node ends
the same typing indicators and calls.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable

from roomcast.clock import Clock
from roomcast.ports.broker import Tick


class DeadlineTimer:
    def __init__(
        self,
        deadlines: Iterable[Callable[[], float | None]],
        append: Callable[[Tick], None],
        clock: Clock,
    ) -> None:
        self._deadlines = list(deadlines)
        self._append = append
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = math.inf
        self._tick_sent = -math.inf  # the time of this node's last tick

    def arm(self) -> None:
        """Make sure the timer fires by the nearest deadline."""
        found = [d for d in (deadline() for deadline in self._deadlines) if d is not None]
        if not found:
            return
        deadline = min(found)
        if deadline <= self._tick_sent:
            return  # this node's tick for it is on its way through the log
        if self._timer is not None and self._timer_deadline <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        # At least a few milliseconds apart, so that a deadline set by a node whose
        # clock runs ahead cannot make this one tick in a busy loop.
        delay = max(deadline - self._clock.now(), 0.005)
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_deadline = math.inf
        now = self._clock.now()
        self._tick_sent = now
        # Applying the tick re-arms the timer for what is left.
        self._append(Tick(now, self._clock.wall_ms()))

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
