"""How a refused request is described: the error codes and the exception that carries one."""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A request that is answered with an ``error`` frame.

    ``type`` is the offending message type when it is known, so a client can
    tell which of its requests failed.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        type: str | None = None,
        retry_after_ms: int | None = None,
        client_msg_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.type = type
        self.retry_after_ms = retry_after_ms
        self.client_msg_id = client_msg_id
