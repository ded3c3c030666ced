"""Chat messages, edits, deletes and reactions.

A chat request is never awaited: it is submitted to the store's group
commit and the connection moves on to its next request; the message is
appended to the log when its transaction commits, so that nothing unstored
is ever broadcast. Because commits resolve in submission order, delivery
order equals id order on one node (and the room's order restores it across
nodes).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from roomcast.core.deliveries import ToRoom
from roomcast.core.limits import MessageClass
from roomcast.features.notifications import Notified, Retracted
from roomcast.node.connections import LocalConnection
from roomcast.node.feature import Applier, Feature, Route
from roomcast.ports.broker import LogEntry, Scope, room_scope
from roomcast.ports.store import (
    DeleteMessage,
    EditMessage,
    InsertMessage,
    Operation,
    Outcome,
    Result,
    StoreUnavailable,
    ToggleReaction,
)
from roomcast.protocol import (
    ChatMessage,
    ChatRequest,
    ErrorCode,
    Event,
    MessageDeleted,
    MessageDeleteRequest,
    MessageEdited,
    MessageEditRequest,
    MessageReaction,
    MessageReactionRequest,
    ProtocolError,
    ThreadUpdated,
    UserId,
)
from roomcast.protocol.names import USER_ID_MAX_CHARS, visible_name


class MessageStored(LogEntry, tag="message", frozen=True, gc=False):
    """A chat message was committed with room sequence ``seq``."""

    message: ChatMessage
    seq: int
    # A reply: its thread's summary now.
    thread: ThreadUpdated | None = None

    def scope(self) -> Scope:
        return room_scope(self.message.room_id)


class MessageChanged(LogEntry, tag="message_changed", frozen=True, gc=False):
    """A committed change to a message (edit, delete, reaction), its event encoded once."""

    room: int
    event: msgspec.Raw
    # An edit or delete of a reply: its thread's summary now.
    thread: ThreadUpdated | None = None
    # A delete: the room's unread counts may have changed.
    recount: bool = False

    def scope(self) -> Scope:
        return room_scope(self.room)


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

#: Why the store refused an operation, as the client is told.
_REFUSALS = {
    Outcome.NOT_FOUND: (ErrorCode.NOT_FOUND, "message {id} not found"),
    Outcome.FORBIDDEN: (ErrorCode.FORBIDDEN, "message {id} belongs to another user"),
    Outcome.ARCHIVED: (ErrorCode.FORBIDDEN, "message {id} is in an archived room"),
    Outcome.CONFLICT: (
        ErrorCode.INVALID_MESSAGE,
        "payload.client_msg_id: already used for message {id} in another room",
    ),
}

MessageRequest = MessageEditRequest | MessageDeleteRequest | MessageReactionRequest


class Messages(Feature):
    name = "messages"

    def routes(self) -> Iterable[Route]:
        return (
            Route(ChatRequest, MessageClass.CHAT, self._chat),
            Route(MessageEditRequest, MessageClass.CHAT, self._change),
            Route(MessageDeleteRequest, MessageClass.CHAT, self._change),
            Route(MessageReactionRequest, MessageClass.CHAT, self._change),
        )

    def appliers(self) -> Mapping[type[LogEntry], Applier]:
        return {MessageStored: self._stored, MessageChanged: self._changed}

    # -- requests -----------------------------------------------------------------------

    def _chat(
        self, conn: LocalConnection, request: ChatRequest
    ) -> Coroutine[Any, Any, None] | None:
        parts = self.parts
        user_id = parts.engine.require_member(conn.id, request.room_id, request.TYPE)
        op = InsertMessage(
            room_id=request.room_id,
            user_id=user_id,
            content=self._content(request),
            kind=request.type,
            created_at=parts.clock.wall_ms(),
            client_msg_id=request.client_msg_id,
            mentions=_mentioned(request.mentions, request.TYPE) if request.mentions else (),
        )
        if request.thread_id is None:
            self._submit(conn, op, request.TYPE)
            return None
        return self._reply(conn, op, request.thread_id)

    async def _reply(self, conn: LocalConnection, op: InsertMessage, thread_id: int) -> None:
        """A reply goes to its thread's root (threads do not nest), which must be
        a live message of the room."""
        root = await self.parts.store.thread_root(op.room_id, thread_id)
        if root is None:
            raise ProtocolError(
                ErrorCode.NOT_FOUND,
                f"payload.thread_id: message {thread_id} is not a message of room {op.room_id}",
                "chat",
                client_msg_id=op.client_msg_id,
            )
        self._submit(conn, msgspec.structs.replace(op, thread_id=root), "chat")

    def _change(self, conn: LocalConnection, request: MessageRequest) -> None:
        user_id = conn.user_id
        assert user_id is not None
        rooms = frozenset(self.parts.engine.rooms.rooms_of(conn.id))
        now = self.parts.clock.wall_ms()
        op: Operation
        if isinstance(request, MessageEditRequest):
            mentions = request.mentions
            op = EditMessage(
                request.message_id,
                user_id,
                rooms,
                self._content(request),
                now,
                None if mentions is None else _mentioned(mentions, request.TYPE),
            )
        elif isinstance(request, MessageDeleteRequest):
            op = DeleteMessage(request.message_id, user_id, rooms, now)
        else:
            emoji = unicodedata.normalize("NFC", request.emoji)
            op = ToggleReaction(request.message_id, user_id, rooms, emoji, now)
        self._submit(conn, op, request.TYPE)

    def _content(self, request: ChatRequest | MessageEditRequest) -> str:
        # Control characters (but newline and tab) are dropped: they can only
        # confuse the terminals, logs and renderers that show the text later.
        content = request.content
        if not content.isprintable():  # rare: only then look for what to remove
            content = _CONTROL_CHARACTERS.sub("", content.replace("\r\n", "\n"))
        if not content.strip():
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, "payload.content: must not be empty", request.TYPE
            )
        most = self.parts.settings.max_content_chars
        if len(content) > most:
            raise ProtocolError(
                ErrorCode.TOO_LARGE, f"payload.content: longer than {most} characters", request.TYPE
            )
        return content

    def _submit(self, conn: LocalConnection, op: Operation, request_type: str) -> None:
        try:
            self.parts.store.submit(
                op, lambda result, error: self._committed(conn, op, request_type, result, error)
            )
        except RuntimeError:
            raise StoreUnavailable("the store is shutting down") from None

    def _committed(
        self,
        conn: LocalConnection,
        op: Operation,
        request_type: str,
        result: Result | None,
        exc: BaseException | None,
    ) -> None:
        """A group commit finished: announce what it did, or tell the sender why not."""
        client_msg_id = op.client_msg_id if isinstance(op, InsertMessage) else None
        if exc is not None or result is None:
            code, text = ErrorCode.INTERNAL, "the message could not be stored"
        elif result.outcome is not Outcome.DONE:
            code, text = _REFUSALS[result.outcome]
            text = text.format(id=result.message_id)
        else:
            code = None
        if code is not None:
            error = ProtocolError(code, text, request_type, client_msg_id=client_msg_id)
            self.parts.outbox.reply_error(conn, error)
            return
        assert result is not None
        if result.duplicate_of is not None:
            # A retry of a stored message: the sender gets it again, nobody else does.
            self.parts.outbox.send(conn, result.duplicate_of)
            return
        self.parts.append(self._announcement(op, result))
        # Notifications follow their message, each to its user's connections.
        for user, notification in result.notified:
            self.parts.append(Notified(user, notification))
        if result.retracted:
            for user, ids in _by_user(result.retracted).items():
                self.parts.append(Retracted(user, ids, result.room_id))

    def _announcement(self, op: Operation, result: Result) -> LogEntry:
        """The log entry that announces a committed operation."""
        room_id, message_id = result.room_id, result.message_id
        if isinstance(op, InsertMessage):
            message = ChatMessage(
                id=message_id,
                room_id=room_id,
                user_id=op.user_id,
                content=op.content,
                type="text",
                created_at=op.created_at,
                thread_id=op.thread_id,
                mentions=result.mentions,
                client_msg_id=op.client_msg_id,
            )
            return MessageStored(message, result.seq, result.thread)
        event: Event
        if isinstance(op, EditMessage):
            event = MessageEdited(
                message_id=message_id,
                room_id=room_id,
                content=op.content,
                edited_at=op.edited_at,
                thread_id=result.thread_id,
                mentions=result.mentions,
            )
        elif isinstance(op, DeleteMessage):
            event = MessageDeleted(message_id=message_id, room_id=room_id, by=op.user_id)
        elif isinstance(op, ToggleReaction):
            event = MessageReaction(
                message_id=message_id,
                room_id=room_id,
                user_id=op.user_id,
                emoji=op.emoji,
                action="added" if result.added else "removed",
            )
        else:  # pragma: no cover - only the operations above are submitted here
            raise TypeError(f"no announcement for {type(op).__name__}")
        encoded = msgspec.Raw(self.parts.outbox.encode(event))
        return MessageChanged(room_id, encoded, result.thread, isinstance(op, DeleteMessage))

    # -- log entries --------------------------------------------------------------------

    def _stored(self, entry: MessageStored, appended_here: bool) -> None:
        message = entry.message
        # Typing ends (and automatic away) in log order; the message itself goes
        # out in room order.
        ended = self.parts.engine.message_stored(message)
        if ended:
            self.parts.outbox.deliver(ended)
            self.parts.arm_timer()
        self.parts.room_order.offer(message.room_id, entry.seq, self.parts.outbox.encode(message))
        if entry.thread is not None:
            self._thread_updated(entry.thread)

    def _changed(self, entry: MessageChanged, appended_here: bool) -> None:
        self.parts.outbox.to_room(entry.room, bytes(entry.event))
        if entry.thread is not None:
            self._thread_updated(entry.thread)

    def _thread_updated(self, thread: ThreadUpdated) -> None:
        self.parts.outbox.deliver((ToRoom(thread.room_id, thread),))


def _mentioned(named: Sequence[UserId], request_type: str) -> tuple[str, ...]:
    """The named users in NFC, each once (the store keeps the room's members)."""
    kept: dict[str, None] = {}
    for index, name in enumerate(named):
        try:
            kept[visible_name(name, USER_ID_MAX_CHARS)] = None
        except ValueError as exc:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, f"payload.mentions[{index}]: {exc}", request_type
            ) from None
    return tuple(kept)


def _by_user(pairs: Iterable[tuple[str, int]]) -> dict[str, tuple[int, ...]]:
    grouped: dict[str, list[int]] = {}
    for user, notification_id in pairs:
        grouped.setdefault(user, []).append(notification_id)
    return {user: tuple(ids) for user, ids in grouped.items()}
