"""The rules of conversations: who a message notifies, and how read receipts
are paced. No I/O; the store and the conversations feature ask these.

* Mentions are explicit (a list of user ids, as Matrix's intentional
  mentions): only members of the room other than the author are kept, each
  once, in the order named, at most :data:`~roomcast.protocol.MAX_MENTIONS`.
* A thread reply notifies the root's author and the thread's earlier
  participants (kind ``reply``), but never the author, and never twice: a
  user both mentioned and taking part gets one ``mention``.
* Read receipts are coalesced per user and room: at most one per
  :data:`RECEIPT_INTERVAL`, the newest marker winning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from roomcast.protocol import MAX_MENTIONS

#: Characters of a message kept in its notifications.
EXCERPT_CHARS = 140
#: Seconds between two read receipts of one user in one room.
RECEIPT_INTERVAL = 1.0


def excerpt(content: str) -> str:
    """The start of a message as its notification shows it (one line)."""
    text = " ".join(content.split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def kept_mentions(named: Iterable[str], members: Iterable[str], author: str) -> tuple[str, ...]:
    """The mentions a message keeps: the named members of the room, author aside."""
    allowed = set(members)
    allowed.discard(author)
    kept: dict[str, None] = {}
    for user in named:
        if user in allowed:
            kept[user] = None
            if len(kept) == MAX_MENTIONS:
                break
    return tuple(kept)


def reply_recipients(
    participants: Iterable[str], author: str, mentioned: Iterable[str]
) -> tuple[str, ...]:
    """Who a thread reply notifies as a reply: earlier participants (the root's
    author among them) but the author and those it mentions."""
    skip = {author, *mentioned}
    return tuple(dict.fromkeys(p for p in participants if p not in skip))


def marker_moves(current: int, proposed: int) -> bool:
    """A read marker only moves forward: an older or equal one changes nothing."""
    return proposed > current


@dataclass(slots=True)
class _Pacing:
    last_sent: float
    pending: int | None = None  # the newest marker waiting to be sent


#: What a receipt is paced by: (room id, user id, thread id or None).
ReceiptKey = tuple[int, str, int | None]


class ReceiptPacer:
    """Paces the read receipts one node sends: per user and room (and thread),
    one at once, then at most one per :data:`RECEIPT_INTERVAL` with the newest
    marker.

    ``offer`` says whether to send now; otherwise the marker waits, and
    :meth:`due` hands back the receipts whose time has come.
    """

    def __init__(self, interval: float = RECEIPT_INTERVAL) -> None:
        self.interval = interval
        self._paced: dict[ReceiptKey, _Pacing] = {}

    def offer(self, key: ReceiptKey, message_id: int, now: float) -> bool:
        """A marker moved: True to send its receipt now; False when it waits."""
        paced = self._paced.get(key)
        if paced is None or now - paced.last_sent >= self.interval:
            self._paced[key] = _Pacing(now)
            return True
        paced.pending = message_id
        return False

    def next_deadline(self) -> float | None:
        waiting = [p.last_sent + self.interval for p in self._paced.values() if p.pending]
        return min(waiting) if waiting else None

    def due(self, now: float) -> list[tuple[ReceiptKey, int]]:
        """The waiting receipts that may go now, as (key, message id); pacings
        with nothing left to wait for are forgotten."""
        sent = []
        for key, paced in list(self._paced.items()):
            if now - paced.last_sent < self.interval:
                continue
            if paced.pending is None:
                del self._paced[key]
                continue
            sent.append((key, paced.pending))
            paced.last_sent, paced.pending = now, None
        return sent
