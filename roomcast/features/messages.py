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
from collections.abc import Iterable, Mapping

import msgspec

from roomcast.core.limits import MessageClass
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
)


class MessageStored(LogEntry, tag="message", frozen=True, gc=False):
    """A chat message was committed with room sequence ``seq``."""

    message: ChatMessage
    seq: int

    def scope(self) -> Scope:
        return room_scope(self.message.room_id)


class MessageChanged(LogEntry, tag="message_changed", frozen=True, gc=False):
    """A committed change to a message (edit, delete, reaction), its event encoded once."""

    room: int
    event: msgspec.Raw

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

    def _chat(self, conn: LocalConnection, request: ChatRequest) -> None:
        parts = self.parts
        user_id = parts.engine.require_member(conn.id, request.room_id, request.TYPE)
        op = InsertMessage(
            room_id=request.room_id,
            user_id=user_id,
            content=self._content(request),
            kind=request.type,
            created_at=parts.clock.wall_ms(),
            client_msg_id=request.client_msg_id,
        )
        self._submit(conn, op, request.TYPE)

    def _change(self, conn: LocalConnection, request: MessageRequest) -> None:
        user_id = conn.user_id
        assert user_id is not None
        rooms = frozenset(self.parts.engine.rooms.rooms_of(conn.id))
        now = self.parts.clock.wall_ms()
        op: Operation
        if isinstance(request, MessageEditRequest):
            op = EditMessage(request.message_id, user_id, rooms, self._content(request), now)
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
                client_msg_id=op.client_msg_id,
            )
            return MessageStored(message, result.seq)
        event: Event
        if isinstance(op, EditMessage):
            event = MessageEdited(
                message_id=message_id, room_id=room_id, content=op.content, edited_at=op.edited_at
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
        return MessageChanged(room_id, msgspec.Raw(self.parts.outbox.encode(event)))

    # -- log entries --------------------------------------------------------------------

    def _stored(self, entry: MessageStored, appended_here: bool) -> None:
        message = entry.message
        # Typing ends in log order; the message itself goes out in room order.
        typing_ended = self.parts.engine.message_stored(message)
        if typing_ended:
            self.parts.outbox.deliver(typing_ended)
        self.parts.room_order.offer(message.room_id, entry.seq, self.parts.outbox.encode(message))

    def _changed(self, entry: MessageChanged, appended_here: bool) -> None:
        self.parts.outbox.to_room(entry.room, bytes(entry.event))
