"""The AsyncAPI document: complete, self-contained, and in agreement with the decoder.

Frames are validated with a small JSON Schema checker below rather than a new
dependency. It knows exactly the keywords msgspec generates, and a test makes
sure the document uses no other keyword, so it cannot pass by ignoring one.
Patterns are matched with Python's ``re.search``, as msgspec does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from roomcast.asyncapi import HTTP_BODIES, asyncapi_document
from roomcast.protocol import (
    CLIENT_TYPES,
    SERVER_TYPES,
    ErrorCode,
    ProtocolError,
    decode_client,
    encode,
)
from tests.harness.client import Client
from tests.harness.http import http_json, http_request
from tests.harness.server import ServerProcess

# -- a JSON Schema checker for what msgspec generates ------------------------------------

KNOWN_KEYWORDS = {
    "$ref",
    "additionalProperties",
    "anyOf",
    "const",
    "default",
    "description",
    "enum",
    "items",
    "maxItems",
    "maxLength",
    "maximum",
    "minItems",
    "minLength",
    "minimum",
    "pattern",
    "properties",
    "required",
    "title",
    "type",
}


def document() -> dict[str, Any]:
    """The document as a client sees it: after a JSON round trip."""
    doc: dict[str, Any] = json.loads(json.dumps(asyncapi_document()))
    return doc


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    """The document; tests of its content are skipped if it cannot be generated at all.

    That failure is reported once, by test_document_can_be_generated, instead of
    once per test below.
    """
    try:
        return document()
    except Exception as exc:
        pytest.skip(f"asyncapi_document() fails ({exc!r}); see test_document_can_be_generated")


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON pointer (``#/a/b``); KeyError/IndexError if it leads nowhere."""
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def refs(node: Any, path: str = "#") -> Iterator[tuple[str, str]]:
    """Every ``$ref`` in ``node`` with where it was found."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield path, value
            else:
                yield from refs(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from refs(value, f"{path}/{index}")


def schemas_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema object below a schema (through properties, items, anyOf)."""
    if not isinstance(node, dict):
        return
    yield node
    for child in node.get("properties", {}).values():
        yield from schemas_in(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from schemas_in(node[key])
    for child in node.get("anyOf", []):
        yield from schemas_in(child)


_JSON_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def errors(doc: dict[str, Any], schema: dict[str, Any], value: Any, at: str = "$") -> list[str]:
    """Why ``value`` does not match ``schema`` (empty if it does)."""
    unknown = set(schema) - KNOWN_KEYWORDS
    assert not unknown, f"the checker does not know {unknown} (at {at})"
    if "$ref" in schema:
        return errors(doc, resolve(doc, schema["$ref"]), value, at)
    if "anyOf" in schema:
        if not any(not errors(doc, option, value, at) for option in schema["anyOf"]):
            return [f"{at}: matches none of anyOf"]
        return []
    found: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_JSON_TYPES[name](value) for name in names):
            return [f"{at}: {value!r} is not {types}"]
    if "const" in schema and value != schema["const"]:
        found.append(f"{at}: {value!r} != const {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{at}: {value!r} not in {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{at}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{at}: {value} > {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            found.append(f"{at}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            found.append(f"{at}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{at}: {value!r} does not match {schema['pattern']!r}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            found.append(f"{at}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            found.append(f"{at}: more than {schema['maxItems']} items")
        for index, item in enumerate(value):
            found += errors(doc, schema.get("items", {}), item, f"{at}[{index}]")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                found.append(f"{at}: missing {name!r}")
        properties = schema.get("properties", {})
        for name, sub in properties.items():
            if name in value:
                found += errors(doc, sub, value[name], f"{at}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):  # a map: every other key's value
            for name, item in value.items():
                if name not in properties:
                    found += errors(doc, extra, item, f"{at}.{name}")
    return found


def message_schema(doc: dict[str, Any], direction: str, type: str) -> dict[str, Any]:
    schema: dict[str, Any] = doc["components"]["messages"][f"{direction}.{type}"]["payload"]
    return schema


def test_checker_catches_what_it_claims_to() -> None:
    doc: dict[str, Any] = {
        "components": {
            "schemas": {
                "Chat": {
                    "type": "object",
                    "properties": {
                        "room_id": {"type": "integer", "minimum": 1},
                        "content": {"type": "string", "maxLength": 5},
                        "user_id": {
                            "anyOf": [{"type": "string", "pattern": "^[a-z]+\\Z"}, {"type": "null"}]
                        },
                        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
                        "votes": {"type": "object", "additionalProperties": {"type": "integer"}},
                    },
                    "required": ["room_id", "content"],
                }
            }
        }
    }
    schema = {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "const": "chat"},
            "payload": {"$ref": "#/components/schemas/Chat"},
        },
    }
    good: dict[str, Any] = {
        "type": "chat",
        "payload": {"room_id": 1, "content": "hi", "user_id": None},
    }
    assert errors(doc, schema, good) == []
    assert errors(doc, schema, {**good, "payload": {**good["payload"], "tags": ["a"]}}) == []
    assert errors(doc, schema, {**good, "payload": {**good["payload"], "votes": {"x": 1}}}) == []
    for bad in [
        {"type": "typing", "payload": {"room_id": 1, "content": "hi"}},
        {"type": "chat", "payload": {"room_id": 0, "content": "hi"}},
        {"type": "chat", "payload": {"room_id": True, "content": "hi"}},
        {"type": "chat", "payload": {"room_id": 1.5, "content": "hi"}},
        {"type": "chat", "payload": {"room_id": 1}},
        {"type": "chat", "payload": {"room_id": 1, "content": "toolong"}},
        {"type": "chat", "payload": {"room_id": 1, "content": "hi", "user_id": "a\n"}},
        {"type": "chat", "payload": {"room_id": 1, "content": "hi", "tags": ["c"]}},
        {"type": "chat", "payload": {"room_id": 1, "content": "hi", "tags": ["a"] * 3}},
        {"type": "chat", "payload": {"room_id": 1, "content": "hi", "votes": {"x": "1"}}},
        {"type": "chat", "payload": []},
        {"payload": {"room_id": 1, "content": "hi"}},
    ]:
        assert errors(doc, schema, bad), bad
    with pytest.raises(AssertionError, match="does not know"):
        errors(doc, {"oneOf": []}, 1)


# -- the document -----------------------------------------------------------------------------


def test_document_can_be_generated() -> None:
    # Regression: a msgspec.Raw field default (WebRTCRequest.media) once made
    # msgspec.json.schema_components raise TypeError, and /asyncapi.json answer 500.
    assert document()["asyncapi"] == "3.0.0"


def test_document_is_asyncapi_3(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "roomcast" and doc["info"]["version"]
    assert doc["channels"]["ws"]["address"] == "/ws"
    assert set(doc["operations"]) == {f"receive.{t}" for t in CLIENT_TYPES} | {
        f"send.{t}" for t in SERVER_TYPES
    }


@pytest.mark.parametrize(
    ("direction", "types", "action"),
    [("client", CLIENT_TYPES, "receive"), ("server", SERVER_TYPES, "send")],
    ids=["client", "server"],
)
def test_every_message_type_has_a_message_and_an_operation(
    doc: dict[str, Any], direction: str, types: dict[str, Any], action: str
) -> None:
    for type in types:
        key = f"{direction}.{type}"
        message = doc["components"]["messages"][key]
        assert message["name"] == type
        assert message["contentType"] == "application/json"
        envelope = message["payload"]
        assert envelope["type"] == "object"
        assert envelope["properties"]["type"] == {"type": "string", "const": type}
        assert "$ref" in envelope["properties"]["payload"]
        required = {"type", "payload", "timestamp"} if direction == "server" else {"type"}
        assert set(envelope["required"]) == required
        assert doc["channels"]["ws"]["messages"][key] == {"$ref": f"#/components/messages/{key}"}
        operation = doc["operations"][f"{action}.{type}"]
        assert operation["action"] == action
        assert resolve(doc, operation["channel"]["$ref"]) is doc["channels"]["ws"]
        [ref] = operation["messages"]
        assert resolve(doc, resolve(doc, ref["$ref"])["$ref"]) is message
    assert len([k for k in doc["components"]["messages"] if k.startswith(f"{direction}.")]) == len(
        types
    )


def test_every_ref_resolves_inside_the_document(doc: dict[str, Any]) -> None:
    found = list(refs(doc))
    assert len(found) > len(CLIENT_TYPES) + len(SERVER_TYPES)
    for where, ref in found:
        try:
            resolve(doc, ref)
        except (KeyError, IndexError, ValueError) as exc:
            raise AssertionError(f"{where}: $ref {ref!r} does not resolve") from exc


def test_schemas_use_only_keywords_the_checker_knows(doc: dict[str, Any]) -> None:
    for name, schema in doc["components"]["schemas"].items():
        for sub in schemas_in(schema):
            assert set(sub) <= KNOWN_KEYWORDS, (name, set(sub) - KNOWN_KEYWORDS)


def test_patterns_are_portable_ecma_262(doc: dict[str, Any]) -> None:
    python_only = re.compile(r"\\[AZz]|\(\?P[<=]|\(\?[aiLmsux]+\)|\(\?#")
    for name, schema in doc["components"]["schemas"].items():
        for sub in schemas_in(schema):
            if "pattern" in sub:
                assert not python_only.search(sub["pattern"]), (name, sub["pattern"])


# -- samples: what the decoder accepts, the document accepts ----------------------------------

CLIENT_SAMPLES: dict[str, list[dict[str, Any]]] = {
    "ping": [{}],
    "join_room": [{"room_id": 1}, {"room_id": 2**53 - 1, "user_id": "alice"}],
    "leave_room": [{}, {"room_id": 5, "from_user_id": "alice"}],
    "chat": [
        {"room_id": 1, "content": "hello"},
        {"room_id": 1, "content": "hi", "type": "text", "user_id": "ünïcode 🙂"},
        {"room_id": 1, "content": "@bob see", "thread_id": 9, "mentions": ["bob", "carol"]},
    ],
    "message_edit": [
        {"message_id": 3, "content": "fixed"},
        {"message_id": 3, "content": "fixed @bob", "mentions": ["bob"]},
        {"message_id": 3, "content": "nobody", "mentions": []},
    ],
    "read": [{"room_id": 1, "message_id": 4}, {"room_id": 1, "message_id": 9, "thread_id": 4}],
    "notification_read": [{"ids": [1, 2, 3]}],
    "message_delete": [{"message_id": 3}],
    "message_reaction": [{"message_id": 3, "emoji": "👍"}],
    "typing": [{"room_id": 1, "is_typing": True}, {"room_id": 1, "is_typing": False}],
    "presence": [
        *({"status": status} for status in ("online", "away", "busy", "dnd", "offline")),
        {"status": "dnd", "status_text": "focus time", "until": 1_900_000_000_000},
    ],
    "activity": [{}],
    "webrtc": [
        {"type": "offer", "to_user_id": "bob", "data": {"sdp": "v=0"}, "media": {"video": True}},
        {"type": "answer", "to_user_id": "bob", "data": "v=0", "call_id": "c1"},
        {"type": "ice_candidate", "to_user_id": "bob", "data": None, "call_id": "c1"},
    ],
    "call_end": [{"call_id": "c1"}],
    "call_reject": [{"call_id": "c1"}, {"call_id": "c1", "reason": "busy"}],
}

# Payloads the decoder refuses with invalid_message; the document must refuse them too.
CLIENT_REJECTS: list[tuple[str, dict[str, Any]]] = [
    ("join_room", {}),
    ("join_room", {"room_id": 0}),
    ("join_room", {"room_id": -1}),
    ("join_room", {"room_id": 2**53}),
    ("join_room", {"room_id": "1"}),
    ("join_room", {"room_id": True}),
    ("join_room", {"room_id": 1, "user_id": ""}),
    ("join_room", {"room_id": 1, "user_id": "u" * 65}),
    ("join_room", {"room_id": 1, "user_id": "a\u007fb"}),
    ("chat", {"room_id": 1}),
    ("chat", {"room_id": 1, "content": 5}),
    ("chat", {"room_id": 1, "content": "x", "type": "image"}),
    ("chat", {"room_id": 1, "content": "x", "thread_id": 0}),
    ("chat", {"room_id": 1, "content": "x", "mentions": "bob"}),
    ("chat", {"room_id": 1, "content": "x", "mentions": [""]}),
    ("chat", {"room_id": 1, "content": "x", "mentions": ["u"] * 101}),
    ("message_edit", {"message_id": 1, "content": "x", "mentions": [5]}),
    ("read", {"room_id": 1}),
    ("read", {"room_id": 1, "message_id": 0}),
    ("read", {"room_id": 1, "message_id": 1, "thread_id": "2"}),
    ("notification_read", {"ids": []}),
    ("notification_read", {"ids": [0]}),
    ("notification_read", {"ids": list(range(1, 102))}),
    ("typing", {"room_id": 1, "is_typing": "yes"}),
    ("presence", {"status": "gone"}),
    ("presence", {"status": "busy", "status_text": "x" * 101}),
    ("presence", {"status": "busy", "until": -1}),
    ("message_reaction", {"message_id": 1, "emoji": ""}),
    ("message_reaction", {"message_id": 1, "emoji": "x" * 33}),
    ("webrtc", {"type": "hello", "to_user_id": "bob", "data": {}}),
    ("webrtc", {"type": "offer", "data": {}}),
    ("call_end", {"call_id": ""}),
    ("call_reject", {"call_id": "c1", "reason": "r" * 201}),
]


def _sample(info: msgspec.inspect.Type, full: bool) -> Any:
    """A value of ``info`` within its constraints (``full``: optional fields too)."""
    t = msgspec.inspect
    if isinstance(info, t.IntType):
        return max(info.ge or 1, (info.gt or 0) + 1)
    if isinstance(info, t.StrType):
        return "a" * max(info.min_length or 1, 1)
    if isinstance(info, t.BoolType):
        return True
    if isinstance(info, t.FloatType):
        return 1.5
    if isinstance(info, t.LiteralType):
        return info.values[0]
    if isinstance(info, t.EnumType):
        return next(iter(info.cls)).value
    if isinstance(info, t.NoneType):
        return None
    if isinstance(info, t.UnionType):
        return _sample(next(x for x in info.types if not isinstance(x, t.NoneType)), full)
    if isinstance(info, t.ListType | t.VarTupleType):
        return [_sample(info.item_type, full)] * max(info.min_length or 1, 1)
    if isinstance(info, t.DictType):
        return {}
    if isinstance(info, t.RawType | t.AnyType):
        return {"opaque": [1, "two"]}
    if isinstance(info, t.StructType):
        return {
            field.encode_name: _sample(field.type, full)
            for field in info.fields
            if field.required or full
        }
    raise AssertionError(f"no sample for {info!r}")


def generated_payload(cls: type[msgspec.Struct], full: bool) -> dict[str, Any]:
    payload: dict[str, Any] = _sample(msgspec.inspect.type_info(cls), full)
    return payload


def client_frames() -> list[Any]:
    cases = []
    for type, cls in CLIENT_TYPES.items():
        for i, payload in enumerate(CLIENT_SAMPLES.get(type, [])):
            cases.append(pytest.param(type, payload, id=f"{type}-sample{i}"))
        for full in (False, True):
            payload = generated_payload(cls, full)
            cases.append(pytest.param(type, payload, id=f"{type}-{'full' if full else 'min'}"))
    return cases


def test_hand_written_samples_cover_every_client_type() -> None:
    assert set(CLIENT_SAMPLES) == set(CLIENT_TYPES)


@pytest.mark.parametrize(("type", "payload"), client_frames())
def test_client_frame_the_decoder_accepts_matches_its_schema(
    doc: dict[str, Any], type: str, payload: dict[str, Any]
) -> None:
    frame = {"type": type, "payload": payload, "timestamp": 1_700_000_000_000}
    assert isinstance(decode_client(json.dumps(frame)), CLIENT_TYPES[type])
    assert errors(doc, message_schema(doc, "client", type), frame) == []
    if not payload:  # the payload may be left out when nothing in it is required
        assert isinstance(decode_client(json.dumps({"type": type})), CLIENT_TYPES[type])
        assert errors(doc, message_schema(doc, "client", type), {"type": type}) == []


@pytest.mark.parametrize(
    ("type", "payload"),
    [pytest.param(t, p, id=f"{t}-{i}") for i, (t, p) in enumerate(CLIENT_REJECTS)],
)
def test_client_frame_the_decoder_refuses_fails_its_schema(
    doc: dict[str, Any], type: str, payload: dict[str, Any]
) -> None:
    frame = {"type": type, "payload": payload}
    with pytest.raises(ProtocolError) as refused:
        decode_client(json.dumps(frame))
    assert refused.value.code is ErrorCode.INVALID_MESSAGE
    assert errors(doc, message_schema(doc, "client", type), frame) != []


@pytest.mark.parametrize("type", list(SERVER_TYPES))
def test_encoded_server_frame_matches_its_schema(doc: dict[str, Any], type: str) -> None:
    for full in (False, True):
        payload = generated_payload(SERVER_TYPES[type], full)
        event = msgspec.json.decode(json.dumps(payload), type=SERVER_TYPES[type])
        frame = json.loads(encode(event, 1_700_000_000_000))
        assert frame["type"] == type
        assert errors(doc, message_schema(doc, "server", type), frame) == []


# -- the served document and real frames --------------------------------------------------------


async def test_served_document_is_the_generated_one(server: ServerProcess) -> None:
    status, content_type, body = await http_request("GET", f"{server.http}/asyncapi.json")
    assert (status, content_type) == (200, "application/json")
    assert body == document()


async def frames_until(client: Client, type: str) -> list[dict[str, Any]]:
    """Every frame ``client`` receives up to and including the first of ``type``."""
    frames = [await client.next()]
    while frames[-1]["type"] != type:
        frames.append(await client.next())
    return frames


async def test_frames_from_a_real_session_match_the_document(
    doc: dict[str, Any], server: ServerProcess, room_id: int
) -> None:
    alice = await Client.connect(server.ws_url, f"asyncapi-alice-{room_id}")
    bob = await Client.connect(server.ws_url, f"asyncapi-bob-{room_id}")
    frames: list[dict[str, Any]] = [
        {"type": "connected", "payload": alice.connected, "timestamp": 0},
        {"type": "unread", "payload": alice.unread, "timestamp": 0},
    ]
    requests: list[tuple[str, dict[str, Any]]]
    try:
        await alice.send("join_room", {"room_id": room_id})
        frames += await frames_until(alice, "room_users")
        await bob.send("join_room", {"room_id": room_id})
        frames += await frames_until(bob, "room_users")
        await alice.send("chat", {"room_id": room_id, "content": "hello"})
        frames += await frames_until(alice, "chat")
        message_id = frames[-1]["payload"]["id"]
        reply = {"room_id": room_id, "content": "@bob?", "thread_id": message_id}
        await alice.send("chat", {**reply, "mentions": [f"asyncapi-bob-{room_id}"]})
        frames += await frames_until(alice, "thread_updated")
        frames += await frames_until(bob, "notification")
        await bob.send("read", {"room_id": room_id, "message_id": message_id})
        frames += await frames_until(alice, "read_receipt")
        requests = [
            ("typing", {"room_id": room_id, "is_typing": True}),
            ("message_edit", {"message_id": message_id, "content": "edited"}),
            ("message_reaction", {"message_id": message_id, "emoji": "👍"}),
            ("message_delete", {"message_id": message_id}),
        ]
        for type, payload in requests:
            await alice.send(type, payload)
        # Message operations are answered when they commit, so wait for the last one.
        frames += await frames_until(alice, "message_delete")
        requests = [
            ("presence", {"status": "away"}),
            ("leave_room", {"room_id": 2**53 - 1}),
            ("leave_room", {"room_id": room_id}),
            ("ping", {}),
        ]
        for type, payload in requests:
            await alice.send(type, payload)
        frames += await frames_until(alice, "pong")
        frames += await frames_until(bob, "user_left")
    finally:
        await alice.close()
        await bob.close()
    seen = {frame["type"] for frame in frames}
    assert seen == {
        "connected",
        "unread",
        "thread_updated",
        "notification",
        "read_receipt",
        "room_users",
        "user_joined",
        "user_left",
        "chat",
        "typing",
        "message_edit",
        "message_reaction",
        "message_delete",
        "presence",
        "error",
        "pong",
    }
    for frame in frames:
        assert errors(doc, message_schema(doc, "server", frame["type"]), frame) == [], frame


@pytest.mark.parametrize("request_line", list(HTTP_BODIES))
def test_http_bodies_match_their_schemas(doc: dict[str, Any], request_line: str) -> None:
    """The HTTP answers named in the document validate against their schemas."""
    schema = resolve(doc, doc["x-http-bodies"][request_line]["$ref"])
    for full in (False, True):
        body = generated_payload(HTTP_BODIES[request_line], full)
        assert errors(doc, schema, body) == [], request_line
    assert errors(doc, schema, {"unexpected": True}) != []


async def test_a_real_search_page_matches_its_schema(
    doc: dict[str, Any], server: ServerProcess
) -> None:
    client = await Client.connect(server.ws_url, "schema-searcher")
    try:
        await client.join(990_001)
        await client.send("chat", {"room_id": 990_001, "content": "schema check zqschema"})
        await client.recv_until("chat")
    finally:
        await client.close()
    status, page = await http_json("GET", f"{server.http}/api/search?user_id=s&q=zqschema")
    assert status == 200 and page["results"], page
    schema = resolve(doc, doc["x-http-bodies"]["GET /api/search"]["$ref"])
    assert errors(doc, schema, page) == []
