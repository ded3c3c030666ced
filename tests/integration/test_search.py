"""Search over a real server: what a user finds by HTTP right after chatting on
the WebSocket, who finds nothing, pages, the page around a hit, and every bad
query answered with a clear error. (On the cluster back end this file runs
against PostgreSQL + Redis.)"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

from tests.harness.client import Client, Connect
from tests.harness.http import http_json
from tests.harness.server import ServerProcess
from tests.integration.test_conversations import UserName, get, new_room, say


def marker() -> str:
    """A word no other test's messages hold (tests share one server)."""
    return "zq" + secrets.token_hex(4)


async def search(server: ServerProcess, user: str, q: str, **params: Any) -> dict[str, Any]:
    extra = "".join(f"&{k}={quote(str(v))}" for k, v in params.items())
    return dict(await get(server, f"/api/search?q={quote(q)}{extra}", user))


async def contents(server: ServerProcess, user: str, q: str, **params: Any) -> list[str]:
    return [
        hit["message"]["content"] for hit in (await search(server, user, q, **params))["results"]
    ]


async def refused(server: ServerProcess, path: str) -> tuple[int, dict[str, Any]]:
    status, body = await http_json("GET", f"{server.http}{path}")
    return status, body["error"]


async def test_a_message_is_found_as_soon_as_it_is_broadcast(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    tag = marker()
    room_id = await new_room(server, alice, [bob])
    a = await connect(alice)
    await a.join(room_id)
    texts = [
        f"{tag} Café au lait",
        f"{tag} see foo.png",
        f"{tag} PLT-3699 is fixed",
        f"{tag} the t-shirt",
        f"{tag} db.json",
        f"{tag} deployment",
        f"{tag} 鈴虫が鳴く",
        f"{tag} バッタ",
    ]
    sent = [await say(a, room_id, text) for text in texts]
    for q, index in [
        ("cafe", 0),
        ("foo", 1),
        ("3699", 2),
        ("t-shirt", 3),
        ("db.json", 4),
        ("deploy", 5),
        ("鈴虫", 6),
        ("バッタ", 7),
    ]:
        page = await search(server, bob, f"{tag} {q}")
        assert [hit["message"]["id"] for hit in page["results"]] == [sent[index]["id"]], q
        hit = page["results"][0]
        assert hit["room_id"] == room_id and hit["rank"] == 2
        assert hit["message"]["thread_id"] is None and hit["message"]["user_id"] == alice
        assert "<mark>" in hit["snippet"]
    snippet = (await search(server, bob, f"{tag} 鈴虫"))["results"][0]["snippet"]
    assert snippet == f"<mark>{tag}</mark> <mark>鈴虫</mark>が鳴く"
    # A substring inside a word ranks below a word, newest first within a rank.
    page = await search(server, bob, f"{tag} ploy")
    assert [(h["message"]["id"], h["rank"]) for h in page["results"]] == [(sent[5]["id"], 1)]
    assert page["count_estimate"] == 1 and page["next_cursor"] is None
    everything = await search(server, bob, tag, order="recent")
    assert [h["message"]["id"] for h in everything["results"]] == [m["id"] for m in sent[::-1]]


async def test_an_edit_is_found_by_its_new_text_and_a_delete_not_at_all(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    tag = marker()
    room_id = await new_room(server, alice, [bob])
    a, b = await connect(alice), await connect(bob)
    await a.join(room_id)
    await b.join(room_id)
    message = await say(a, room_id, f"{tag} first wording")
    await b.recv("chat")
    await a.send("message_edit", {"message_id": message["id"], "content": f"{tag} better phrasing"})
    await b.recv("message_edit")  # broadcast: the index changed in its transaction
    assert await contents(server, bob, f"{tag} wording") == []
    assert await contents(server, bob, f"{tag} phrasing") == [f"{tag} better phrasing"]
    await a.send("message_delete", {"message_id": message["id"]})
    await b.recv("message_delete")
    assert await contents(server, bob, tag) == []


async def test_a_removed_member_finds_nothing_of_the_room(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    tag = marker()
    room_id = await new_room(server, alice, [bob])
    a = await connect(alice)
    await a.join(room_id)
    await say(a, room_id, f"{tag} private matter")
    assert await contents(server, bob, tag) == [f"{tag} private matter"]
    assert await contents(server, carol, tag) == []  # never a member
    assert await contents(server, carol, tag, room_id=room_id) == []
    status, _ = await http_json(
        "DELETE", f"{server.http}/api/rooms/{room_id}/members/{bob}?user_id={alice}"
    )
    assert status == 204
    assert await contents(server, bob, tag) == []
    assert await contents(server, bob, f"{tag} in:{room_id}") == []


async def test_filters_in_the_query_and_in_parameters(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice, bob = user("alice"), user("bob")
    tag = marker()
    room_id = await new_room(server, alice, [bob])
    a, b = await connect(alice), await connect(bob)
    await a.join(room_id)
    await b.join(room_id)
    root = await say(a, room_id, f"{tag} root")
    await b.recv_until("chat")
    reply = await say(b, room_id, f"{tag} reply", thread_id=root["id"])
    assert await contents(server, alice, f"{tag} from:{bob}") == [f"{tag} reply"]
    assert await contents(server, alice, tag, from_user_id=alice) == [f"{tag} root"]
    assert await contents(server, alice, f"{tag} from:{bob}", from_user_id=alice) == []
    assert await contents(server, alice, f'{tag} in:"talk"') == [f"{tag} reply", f"{tag} root"]
    assert await contents(server, alice, f"{tag} in:#{room_id}") == [f"{tag} reply", f"{tag} root"]
    assert await contents(server, alice, f"{tag} in:nowhere") == []
    hits = (await search(server, alice, tag, thread_id=root["id"]))["results"]
    assert [(h["message"]["id"], h["message"]["thread_id"]) for h in hits] == [
        (reply["id"], root["id"]),
        (root["id"], None),
    ]
    at = root["created_at"]
    assert f"{tag} root" in await contents(server, alice, tag, after=at - 1, before=at + 1)
    assert f"{tag} root" not in await contents(server, alice, tag, before=at)
    assert f"{tag} root" not in await contents(server, alice, tag, after=at)


async def test_pages_follow_the_rank_then_recency(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice = user("alice")
    tag = marker()
    room_id = await new_room(server, alice, [])
    a = await connect(alice)
    await a.join(room_id)
    # Word hits ("tag") and substring hits ("x" + tag) interleaved in time.
    sent = [await say(a, room_id, f"{'x' if n % 3 else ''}{tag} {n}") for n in range(11)]
    words = [m["id"] for m in sent if not m["content"].startswith("x")][::-1]
    inside = [m["id"] for m in sent if m["content"].startswith("x")][::-1]
    seen: list[tuple[int, int]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = await search(server, alice, tag[2:], **params)
        seen += [(h["message"]["id"], h["rank"]) for h in page["results"]]
        assert page["count_estimate"] == 11
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Part of a word in every message: all are substring hits, newest first.
    assert seen == [(m["id"], 1) for m in sent[::-1]]
    seen = []
    cursor = None
    while True:
        params = {"limit": 4} if cursor is None else {"limit": 4, "cursor": cursor}
        page = await search(server, alice, tag, **params)
        seen += [(h["message"]["id"], h["rank"]) for h in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [(i, 2) for i in words] + [(i, 1) for i in inside]


async def test_bad_queries_get_clear_errors(server: ServerProcess, user: UserName) -> None:
    bob = user("bob")
    base = f"/api/search?user_id={bob}"
    cases = {
        base: "q: give a word to search for",
        f"{base}&q=": "q: give a word to search for",
        f"{base}&q=%20%20": "q: give a word to search for",
        f"{base}&q=*": "q: give a word to search for",
        f"{base}&q=%22%22": "q: give a word to search for",
        f"{base}&q=x&order=best": "order: expected rank or recent",
        f"{base}&q=x&limit=0": "limit: expected a value in 1..50",
        f"{base}&q=x&limit=51": "limit: expected a value in 1..50",
        f"{base}&q=x&room_id=abc": "room_id: expected an integer",
        f"{base}&q=x&before=-1": "before: expected a value in 0..9007199254740991",
        f"{base}&q=x&cursor=bogus": "cursor: expected the next_cursor of a previous page of this order",
        f"{base}&q=x&cursor=12": "cursor: expected the next_cursor of a previous page of this order",
        f"{base}&q=x&order=recent&cursor=w.12": "cursor: expected the next_cursor of a previous page of this order",
        f"{base}&q={'a' * 501}": "q: longer than 500 characters",
        f"{base}&q={'+'.join(f'w{n}' for n in range(11))}": "q: more than 10 words",
    }
    for path, message in cases.items():
        status, error = await refused(server, path)
        assert (status, error["code"], error["message"]) == (400, "invalid_message", message), path
    status, error = await refused(server, "/api/search?q=x")
    assert (status, error["code"]) == (401, "unauthenticated")
    # FTS and SQL syntax is text to find, never an error.
    for q in ['"', "NEAR(x", "-x", "x:", "'", '"unbalanced', "a' OR 1=1 --", "x*"]:
        status, body = await http_json("GET", f"{server.http}{base}&q={quote(q)}")
        assert status in (200, 400), (q, body)
        if status == 400:
            assert body["error"]["code"] == "invalid_message"


async def test_a_snippet_is_escaped_text_with_marks(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice = user("alice")
    tag = marker()
    room_id = await new_room(server, alice, [])
    a = await connect(alice)
    await a.join(room_id)
    await say(a, room_id, f"<img src=x onerror=alert(1)> {tag} & more")
    [hit] = (await search(server, alice, tag))["results"]
    assert hit["snippet"] == f"&lt;img src=x onerror=alert(1)&gt; <mark>{tag}</mark> &amp; more"
    assert hit["message"]["content"] == f"<img src=x onerror=alert(1)> {tag} & more"


async def test_the_page_around_a_message(
    server: ServerProcess, connect: Connect, user: UserName
) -> None:
    alice = user("alice")
    room_id = await new_room(server, alice, [])
    a: Client = await connect(alice)
    await a.join(room_id)
    ids = [(await say(a, room_id, f"m{n}"))["id"] for n in range(9)]
    path = f"/api/rooms/{room_id}/messages"
    page = await get(server, f"{path}?around={ids[4]}&limit=5", alice)
    assert [m["id"] for m in page["messages"]] == ids[2:7]
    assert (page["next_before"], page["next_after"]) == (ids[2], ids[6])
    newer = await get(server, f"{path}?after={page['next_after']}&limit=5", alice)
    assert [m["id"] for m in newer["messages"]] == ids[7:]
    assert (newer["next_before"], newer["next_after"]) == (None, None)
    older = await get(server, f"{path}?before={page['next_before']}&limit=5", alice)
    assert [m["id"] for m in older["messages"]] == ids[:2] and older["next_before"] is None
    # Near either end, the page fills from the other side.
    start = await get(server, f"{path}?around={ids[0]}&limit=4", alice)
    assert [m["id"] for m in start["messages"]] == ids[:4]
    assert (start["next_before"], start["next_after"]) == (None, ids[3])
    end = await get(server, f"{path}?around={ids[8]}&limit=4", alice)
    assert [m["id"] for m in end["messages"]] == ids[5:]
    assert (end["next_before"], end["next_after"]) == (ids[5], None)
    status, error = await refused(server, f"{path}?around={ids[0]}&before=5&user_id={alice}")
    assert (status, error["message"]) == (400, "give one of before, after and around")
    status, error = await refused(server, f"{path}?around=x&user_id={alice}")
    assert (status, error["message"]) == (400, "around: expected an integer")
