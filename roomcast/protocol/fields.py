"""Field types that client requests, server events and HTTP bodies share.

Each constraint is written once, so a room id or a call id is checked alike
wherever it appears, and the JSON schema says the same everywhere.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final, Literal

import msgspec

#: The largest id anywhere in the protocol: JavaScript's numbers hold integers
#: exactly only up to 2**53 - 1, so a browser's ``JSON.parse`` would round a
#: larger id to another room's.
MAX_ID: Final = 2**53 - 1
#: Database ids: positive and exact in JavaScript.
Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]

#: ``dnd``: do not disturb (notifications arrive quiet, as with ``busy``);
#: ``offline`` chosen by a connected user: appear invisible.
Status = Literal["online", "away", "busy", "dnd", "offline"]
#: Call ids are created by the server; clients echo them back.
CallId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
SignalKind = Literal["offer", "answer", "ice_candidate"]
#: The raw JSON ``null``, for opaque fields that were not given.
NULL: Final = msgspec.Raw(b"null")
CallEndReason = Literal[
    "rejected",
    "ended",
    "no_answer",
    "unavailable",
    "busy",
    "glare",
    "disconnected",
    "answered_elsewhere",
]
MessageKind = Literal["text"]


class Role(enum.StrEnum):
    """A member's role in a room (the rules: :mod:`roomcast.core.membership`)."""

    OWNER = "owner"
    MODERATOR = "moderator"
    MEMBER = "member"
