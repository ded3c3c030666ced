"""HTTP for shared files: uploads streamed in, downloads that can never run
script in the app's origin.

``POST /api/rooms/{id}/files`` takes the file as the request body (name in
``?filename=`` or ``Content-Disposition``), read in chunks as it arrives.
``GET /api/files/{id}`` (and ``/thumbnails/{width}``) serves it to whoever
may read its room, by the usual identity or a signed link (``?exp=&sig=``,
for ``<img src>``). Every answer says ``nosniff`` and sandboxes itself by
CSP; only passive types are inline, everything else is an attachment
served as ``application/octet-stream``. ``Range`` works for seeking.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.multipart import parse_content_disposition

from roomcast.core.files import (
    RangeNotSatisfiable,
    byte_range,
    content_disposition,
    served_inline,
    sign,
    signature_valid,
)
from roomcast.features.files import FileUploads
from roomcast.ports.blobs import BlobStore
from roomcast.ports.store import FileRecord, Store
from roomcast.protocol import ErrorCode, FileInfo, FileThumbnail, ProtocolError
from roomcast.transport.front_door import streams_body
from roomcast.transport.http import HttpApi, json_response

__all__ = ["FileRoutes"]

#: Bytes of a request body read at a time.
UPLOAD_CHUNK = 64 * 1024
_SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class FileRoutes:
    def __init__(
        self,
        api: HttpApi,
        store: Store,
        blobs: BlobStore,
        uploads: FileUploads,
        secret: bytes,
        link_ttl: int,
        body_timeout: float,
    ) -> None:
        self._body_timeout = body_timeout
        self._api = api
        self._store = store
        self._blobs = blobs
        self._uploads = uploads
        self._secret = secret
        self._link_ttl = link_ttl

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.post("/api/rooms/{room_id}/files", self.upload),
            web.get("/api/files/{file_id}", self.download),
            web.get("/api/files/{file_id}/thumbnails/{width}", self.download),
        ]

    @streams_body
    async def upload(self, request: web.Request) -> web.Response:
        user = self._api.user(request)
        room_id = self._api.room_id(request)
        name = request.query.get("filename")
        if name is None:
            _, params = parse_content_disposition(request.headers.get("Content-Disposition"))
            name = params.get("filename", "")
        record = await self._uploads.upload(
            room_id,
            user,
            name,
            self._body(request),
            request.content_length,
        )
        return json_response(self.info(record), 201)

    async def _body(self, request: web.Request) -> AsyncIterator[bytes]:
        """The body as it arrives, each part within the body timeout (a client
        that stops sending mid-upload is cut off, and nothing is kept)."""
        while True:
            try:
                async with asyncio.timeout(self._body_timeout):
                    chunk = await request.content.read(UPLOAD_CHUNK)
            except TimeoutError:
                raise ProtocolError(
                    ErrorCode.INVALID_MESSAGE, "the upload stopped arriving"
                ) from None
            if not chunk:
                return
            yield chunk

    def info(self, record: FileRecord) -> FileInfo:
        return FileInfo(
            file_id=record.id,
            name=record.name,
            size=record.size,
            content_type=record.content_type,
            sha256=record.blob,
            url=self.link(record.id),
            width=record.width,
            height=record.height,
            thumbnails=[
                FileThumbnail(t.width, t.height, self.link(record.id, t.width))
                for t in record.thumbnails
            ],
        )

    def link(self, file_id: str, width: int | None = None) -> str:
        """A signed link to the file (or its thumbnail), valid for the link TTL."""
        expires = int(time.time()) + self._link_ttl
        path = f"/api/files/{file_id}" + (f"/thumbnails/{width}" if width else "")
        return f"{path}?exp={expires}&sig={sign(self._secret, file_id, expires)}"

    async def download(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        record = await self._store.file(file_id)
        if record is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such file")
        if not self._signed(request, file_id):
            await self._api.readable_room(record.room_id, self._api.viewer(request))
        blob, size, kind = record.blob, record.size, record.content_type
        if "width" in request.match_info:
            wanted = request.match_info["width"]
            found = [t for t in record.thumbnails if str(t.width) == wanted]
            if not found:
                raise ProtocolError(ErrorCode.NOT_FOUND, "no such thumbnail")
            blob, size, kind = found[0].blob, found[0].size, "image/webp"
        inline = served_inline(kind)
        headers = {
            **_SAFE_HEADERS,
            "Content-Type": kind if inline else "application/octet-stream",
            "Content-Disposition": content_disposition(record.name, inline),
            "ETag": f'"{blob}"',
            "Cache-Control": "private, max-age=31536000, immutable",
            "Accept-Ranges": "bytes",
        }
        if request.headers.get("If-None-Match") == headers["ETag"]:
            return web.Response(status=304, headers=headers)
        try:
            span = byte_range(request.headers.get("Range"), size)
        except RangeNotSatisfiable:
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        start, end = span if span is not None else (0, size)
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        status = 206 if span else 200
        if request.method == "HEAD":
            # The headers only: bytes written after them would be read as the
            # connection's next response.
            headers["Content-Length"] = str(end - start)
            return web.Response(status=status, headers=headers)
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start
        await response.prepare(request)
        async for chunk in self._blobs.read(blob, start, end):
            await response.write(chunk)
        await response.write_eof()
        return response

    def _signed(self, request: web.Request, file_id: str) -> bool:
        expires, signature = request.query.get("exp"), request.query.get("sig")
        if expires is None or signature is None:
            return False
        if not expires.isdigit() or not signature_valid(
            self._secret, file_id, int(expires), signature, int(time.time())
        ):
            raise ProtocolError(ErrorCode.FORBIDDEN, "the link has expired or is not this file's")
        return True
