"""Message search: ``GET /api/search``.

The store finds the hits (:mod:`roomcast.adapters.sql.search`), checking in
the same query who may read each room now; this feature reads a request's
query and filters, pages through the two ranks, and shows each hit as a
snippet. It takes no part in the log: the index changes with the messages,
in their own transactions, on whichever node stores them.

Paging is by message id within a rank: with ``order=rank`` the messages where
every term matched as a word come first, newest first, then those that needed
a substring; with ``order=recent`` all of them, newest first. A cursor names
the last hit shown (``w.<id>``, ``s.<id>``, or ``<id>``), so a page never
repeats or skips a hit whatever is written meanwhile.
"""

from __future__ import annotations

import enum
from dataclasses import replace

from roomcast.core.search import (
    Query,
    QueryError,
    SearchFilters,
    Tier,
    parse_query,
    rank_of,
    snippet,
)
from roomcast.node.feature import Feature
from roomcast.ports.store import Store
from roomcast.protocol import (
    MAX_ID,
    ErrorCode,
    HistoryMessage,
    ProtocolError,
    SearchHit,
    SearchPage,
)

#: Hits counted for ``count_estimate`` at most.
COUNT_CAP = 1000
#: Room names in ``in:`` are compared with ASCII case ignored, as the SQL does.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
#: The cursor prefix of each rank's pages (``order=rank``).
_TIER_PREFIX = {Tier.WORDS: "w", Tier.SUBSTRINGS: "s"}


class SearchOrder(enum.Enum):
    RANK = "rank"
    RECENT = "recent"


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_MESSAGE, message)


def read_cursor(text: str | None, order: SearchOrder) -> tuple[str, int | None]:
    """The tier and id a cursor continues after (the first tier, no id: none)."""
    first = Tier.WORDS if order is SearchOrder.RANK else Tier.ALL
    if text is None:
        return first, None
    tier, dot, number = text.rpartition(".")
    tiers = {v: k for k, v in _TIER_PREFIX.items()} if order is SearchOrder.RANK else {"": Tier.ALL}
    if (
        (bool(dot) == (order is SearchOrder.RANK))
        and tier in tiers
        and number.isascii()
        and number.isdigit()
        and 0 < int(number) <= MAX_ID
    ):
        return tiers[tier], int(number)
    raise _invalid("cursor: expected the next_cursor of a previous page of this order")


def _cursor(tier: str, message_id: int) -> str:
    return f"{_TIER_PREFIX[tier]}.{message_id}" if tier in _TIER_PREFIX else str(message_id)


class MessageSearch(Feature):
    """Finds the messages a user may read by what they contain."""

    name = "search"

    async def search(
        self,
        viewer: str,
        q: str,
        filters: SearchFilters,
        order: SearchOrder,
        limit: int,
        cursor: str | None,
    ) -> SearchPage:
        return await search_page(self.parts.store, viewer, q, filters, order, limit, cursor)


async def search_page(
    store: Store,
    viewer: str,
    q: str,
    filters: SearchFilters,
    order: SearchOrder,
    limit: int,
    cursor: str | None,
) -> SearchPage:
    """One page of a search, as ``GET /api/search`` answers it."""
    try:
        query = parse_query(q)
    except QueryError as exc:
        raise _invalid(f"q: {exc}") from None
    tier, below = read_cursor(cursor, order)
    narrowed = _narrowed(filters, query)
    if narrowed is None:
        return SearchPage([], 0, None)  # filters that contradict each other
    found: list[tuple[str, HistoryMessage, str]] = []
    tiers = [tier]
    if tier == Tier.WORDS and not query.words_only:
        tiers.append(Tier.SUBSTRINGS)  # short terms only: every hit is a word hit
    for index, each in enumerate(tiers):
        wanted = limit + 1 - len(found)
        rows = await store.search(
            viewer, query, narrowed, each, below if index == 0 else None, wanted
        )
        found += [(each, message, doc) for message, doc in rows]
        if len(found) > limit:
            break
    count = await store.search_count(viewer, query, narrowed, COUNT_CAP)
    more = len(found) > limit
    found = found[:limit]
    hits = [
        SearchHit(
            message=message,
            room_id=message.room_id,
            rank=rank_of(doc, query),
            snippet=snippet(message.content, query),
        )
        for _, message, doc in found
    ]
    next_cursor = _cursor(found[-1][0], found[-1][1].id) if more else None
    return SearchPage(hits, max(count, len(hits)), next_cursor)


def _narrowed(filters: SearchFilters, query: Query) -> SearchFilters | None:
    """The request's filters with the query's ``from:`` and ``in:``; None when
    the two name different users or rooms (nothing can match both)."""
    if query.from_user is not None:
        if filters.from_user not in (None, query.from_user):
            return None
        filters = replace(filters, from_user=query.from_user)
    room = query.in_room
    if room is not None:
        if room.isascii() and room.isdigit():
            if filters.room_id not in (None, int(room)):
                return None
            filters = replace(filters, room_id=int(room))
        else:
            filters = replace(filters, room_name=room.translate(_ASCII_LOWER))
    return filters
