"""HTTP request and response bodies (the REST side of the protocol)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from roomcast.protocol.events import RoomInfo, RoomUser
from roomcast.protocol.fields import MessageKind
from roomcast.protocol.names import (
    ROOM_NAME_MAX_CHARS,
    USER_ID_MAX_CHARS,
    RoomName,
    UserId,
    _field_error,
    visible_name,
)


class CreateRoom(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/rooms`` body. The name and the members are kept in NFC."""

    name: RoomName
    private: bool = False
    members: Annotated[list[UserId], msgspec.Meta(max_length=1000)] = []

    def __post_init__(self) -> None:
        try:
            self.name = visible_name(self.name, ROOM_NAME_MAX_CHARS)
        except ValueError as exc:
            raise _field_error(exc, "name") from None
        for index, member in enumerate(self.members):
            try:
                self.members[index] = visible_name(member, USER_ID_MAX_CHARS)
            except ValueError as exc:
                raise _field_error(exc, f"members[{index}]") from None


class RoomPage(msgspec.Struct):
    """``GET /api/rooms``: rooms in id order; ``next`` is the ``after`` of the
    next page, ``null`` on the last one."""

    rooms: list[RoomInfo]
    next: int | None


class RoomMembersPage(msgspec.Struct):
    """``GET /api/rooms/{id}/members``: a private room's members by user id."""

    room_id: int
    members: list[str]
    next: str | None


class RoomUsersPage(msgspec.Struct, omit_defaults=True):
    """``GET /api/rooms/{id}/users``: the ``room_users`` payload, one page of it.

    ``next`` (the ``after`` of the next page) only when there is one, so that a
    room that fits one page answers exactly what the WebSocket frame says.
    """

    room_id: int
    users: list[RoomUser]
    next: str | None = None


class HistoryMessage(msgspec.Struct):
    """A stored message in history: the ``chat`` payload plus its edits and reactions."""

    id: int
    room_id: int
    user_id: str
    content: str
    type: MessageKind
    created_at: int
    edited_at: int | None
    reactions: dict[str, list[str]]


class HistoryPage(msgspec.Struct):
    messages: list[HistoryMessage]
    next_before: int | None
