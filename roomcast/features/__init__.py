"""Features: each one module, plugged into the node through :mod:`roomcast.node.feature`."""

from __future__ import annotations

from roomcast.features.calls import Calls
from roomcast.features.membership import Membership
from roomcast.features.messages import Messages
from roomcast.features.notifications import Notifications
from roomcast.features.ping import Ping
from roomcast.features.presence import PresenceStatus
from roomcast.features.reads import Reads
from roomcast.features.rooms import Rooms
from roomcast.features.search import MessageSearch
from roomcast.features.typing import TypingIndicators
from roomcast.node.feature import Feature, NodeParts


def default_features(parts: NodeParts) -> list[Feature]:
    """Every feature of the server, in the order they apply a snapshot's parts
    (rooms first: typing and statuses are for the rooms a connection is in)."""
    return [
        Messages(parts),
        Rooms(parts),
        Membership(parts),
        Notifications(parts),
        Reads(parts),
        TypingIndicators(parts),
        PresenceStatus(parts),
        Calls(parts),
        MessageSearch(parts),
        Ping(parts),
    ]
