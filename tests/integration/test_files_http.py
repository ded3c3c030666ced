"""Files over a real server: upload a file as a request body, download it
with the usual identity or a signed link, in ranges, with the headers that
keep it from running in the page; every refusal a clear error. (On the
cluster back end this runs against PostgreSQL + Redis.)"""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any
from urllib.parse import quote

import aiohttp
from PIL import Image

from tests.harness.server import ServerProcess
from tests.integration.test_conversations import UserName, new_room
from tests.unit.test_images import photo


async def send(
    server: ServerProcess,
    method: str,
    path: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{server.http}{path}", data=data, headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.read()


async def upload(
    server: ServerProcess, user: str, room_id: int, name: str, data: bytes
) -> tuple[int, Any]:
    status, _, body = await send(
        server, "POST", f"/api/rooms/{room_id}/files?user_id={user}&filename={quote(name)}", data
    )
    import json

    return status, json.loads(body)


async def test_a_member_uploads_and_the_room_downloads(
    server: ServerProcess, user: UserName
) -> None:
    alice, bob, eve = user("alice"), user("bob"), user("eve")
    room_id = await new_room(server, alice, [bob])
    shot = photo(1000, 500, location=True)
    status, info = await upload(server, alice, room_id, "IMG 1.jpg", shot)
    assert status == 201, info
    assert (info["name"], info["content_type"], info["width"], info["height"]) == (
        "IMG 1.jpg",
        "image/jpeg",
        1000,
        500,
    )
    assert [(t["width"], t["height"]) for t in info["thumbnails"]] == [(320, 160), (800, 400)]
    file_path = f"/api/files/{info['file_id']}"
    status, headers, data = await send(server, "GET", f"{file_path}?user_id={bob}")
    assert status == 200 and hashlib.sha256(data).hexdigest() == info["sha256"]
    assert len(data) == info["size"]
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert headers["Content-Disposition"].startswith('inline; filename="IMG 1.jpg"')
    with Image.open(io.BytesIO(data)) as image:
        assert 0x8825 not in image.getexif()  # no location in what is served
    # Ranges, and the cache's revalidation.
    status, headers, part = await send(
        server, "GET", f"{file_path}?user_id={bob}", headers={"Range": "bytes=10-19"}
    )
    assert (status, part, headers["Content-Range"]) == (
        206,
        data[10:20],
        f"bytes 10-19/{len(data)}",
    )
    status, headers, _ = await send(
        server, "GET", f"{file_path}?user_id={bob}", headers={"Range": f"bytes={len(data)}-"}
    )
    assert (status, headers["Content-Range"]) == (416, f"bytes */{len(data)}")
    status, _, _ = await send(
        server,
        "GET",
        f"{file_path}?user_id={bob}",
        headers={"If-None-Match": f'"{info["sha256"]}"'},
    )
    assert status == 304
    # HEAD answers the headers alone: the same connection's next answer is whole.
    async with aiohttp.ClientSession() as session:
        async with session.head(f"{server.http}{info['url']}") as head:
            assert head.status == 200 and head.headers["Content-Length"] == str(len(data))
            assert await head.read() == b""
        async with session.get(f"{server.http}{info['url']}") as again:
            assert again.status == 200 and await again.read() == data
    # The signed link works with no identity; the thumbnail's too.
    status, _, signed = await send(server, "GET", info["url"])
    assert status == 200 and signed == data
    status, headers, small = await send(server, "GET", info["thumbnails"][0]["url"])
    assert status == 200 and headers["Content-Type"] == "image/webp"
    assert Image.open(io.BytesIO(small)).size == (320, 160)
    # Not a member: neither upload nor download.
    status, body = await upload(server, eve, room_id, "x.txt", b"hello")
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, _, body_bytes = await send(server, "GET", f"{file_path}?user_id={eve}")
    assert status == 403 and b"forbidden" in body_bytes


async def test_markup_is_a_download_and_links_are_bound(
    server: ServerProcess, user: UserName
) -> None:
    alice = user("alice")
    room_id = await new_room(server, alice, [])
    page = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>"
    status, info = await upload(server, alice, room_id, "photo.png", page)
    assert status == 201 and info["content_type"] == "text/html"
    status, headers, data = await send(server, "GET", info["url"])
    assert status == 200 and data == page
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith('attachment; filename="photo.png"')
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
    _, svg_info = await upload(server, alice, room_id, "logo.svg", svg)
    _, headers, _ = await send(server, "GET", svg_info["url"])
    assert headers["Content-Disposition"].startswith("attachment;")
    # A link for one file does not open another; an expired or altered one opens nothing.
    query = info["url"].split("?", 1)[1]
    status, _, _ = await send(server, "GET", f"/api/files/{svg_info['file_id']}?{query}")
    assert status == 403
    past = int(time.time()) - 10
    status, _, _ = await send(server, "GET", f"/api/files/{info['file_id']}?exp={past}&sig=00")
    assert status == 403
    status, _, _ = await send(server, "GET", "/api/files/no-such-file?user_id=" + alice)
    assert status == 404
    # Names that try to break out of the header or the directory.
    status, odd = await upload(server, alice, room_id, '../a"b\n\u202ec.txt', b"text")
    assert status == 201 and odd["name"] == "a_b_c.txt"
    status, empty = await upload(server, alice, room_id, "empty", b"")
    assert status == 201 and empty["size"] == 0


async def test_an_upload_over_the_limit_is_refused(server: ServerProcess, user: UserName) -> None:
    alice = user("alice")
    room_id = await new_room(server, alice, [])
    big = b"x" * (25 * 2**20 + 1)
    status, body = await upload(server, alice, room_id, "big.bin", big)
    assert (status, body["error"]["code"]) == (413, "too_large")
    status, body = await upload(server, alice, 999_999, "x.txt", b"x")
    assert status in (403, 404)
