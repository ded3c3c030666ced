"""The protocol as an AsyncAPI 3 document, generated from :mod:`roomcast.protocol`.

Generating it from the same structs the server decodes with means the
published document cannot drift from what the server accepts. Operations are
described from the server's side: ``receive`` for client requests, ``send``
for server events.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from roomcast import __version__
from roomcast.protocol import (
    CLIENT_TYPES,
    SERVER_TYPES,
    FileInfo,
    HistoryPage,
    NotificationPage,
    SearchPage,
    ThreadPage,
)

_REF = "#/components/schemas/{name}"
#: HTTP answers whose bodies share the WebSocket's structs (history items,
#: notifications): their schemas are components too, named under
#: ``x-http-bodies``, so a client generates one set of types for both.
HTTP_BODIES: dict[str, type[msgspec.Struct]] = {
    "GET /api/rooms/{id}/messages": HistoryPage,
    "GET /api/rooms/{id}/threads": ThreadPage,
    "GET /api/notifications": NotificationPage,
    "GET /api/search": SearchPage,
    "POST /api/rooms/{id}/files": FileInfo,
}


def _envelope(type_name: str, payload_schema: str, timestamp_required: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "payload", "timestamp"] if timestamp_required else ["type"],
        "properties": {
            "type": {"type": "string", "const": type_name},
            "payload": {"$ref": _REF.format(name=payload_schema)},
            "timestamp": {"type": "integer", "description": "milliseconds since the epoch"},
        },
    }


@functools.cache
def asyncapi_document() -> dict[str, Any]:
    structs = [*CLIENT_TYPES.values(), *SERVER_TYPES.values(), *HTTP_BODIES.values()]
    _, schemas = msgspec.json.schema_components(structs, ref_template=_REF)
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for direction, types, action, timestamp_required in (
        ("client", CLIENT_TYPES, "receive", False),
        ("server", SERVER_TYPES, "send", True),
    ):
        for type_name, cls in types.items():
            key = f"{direction}.{type_name}"
            messages[key] = {
                "name": type_name,
                "title": f"{type_name} ({direction})",
                "summary": (cls.__doc__ or "").strip().split("\n")[0] or None,
                "contentType": "application/json",
                "payload": _envelope(type_name, cls.__name__, timestamp_required),
            }
            operations[f"{action}.{type_name}"] = {
                "action": action,
                "channel": {"$ref": "#/channels/ws"},
                "messages": [{"$ref": f"#/channels/ws/messages/{key}"}],
            }
    for message in messages.values():
        if message["summary"] is None:
            del message["summary"]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "roomcast",
            "version": __version__,
            "description": (
                "Real-time chat, presence and call signaling. Every frame is a JSON text "
                'frame {"type", "payload", "timestamp"}; a client\'s timestamp is optional.'
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "127.0.0.1:3000", "protocol": "ws", "pathname": "/ws"},
        },
        "channels": {
            "ws": {
                "address": "/ws",
                "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in messages},
            }
        },
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
        "x-http-bodies": {
            request: {"$ref": _REF.format(name=cls.__name__)}
            for request, cls in HTTP_BODIES.items()
        },
    }
