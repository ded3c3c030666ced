"""A client that goes away in the middle of a request body costs one log line, no traceback."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path

from tests.harness.http import http_json
from tests.harness.server import ServerProcess

HEAD = (
    "POST /api/rooms?user_id=alice HTTP/1.1\r\n"
    "Host: 127.0.0.1\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 1000\r\n"
    "\r\n"
    '{"name": "half a bo'
)


def abort_post(port: int, reset: bool) -> None:
    """Send a POST head and part of its body, then close (with an RST when ``reset``)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(HEAD.encode())
        time.sleep(0.1)  # the server is reading the body now
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_post_aborted_mid_body_logs_one_line_without_traceback(tmp_db: Path) -> None:
    server = ServerProcess(tmp_db).start()
    try:
        for reset in (False, True, False):
            await asyncio.to_thread(abort_post, server.port, reset)
        deadline = time.monotonic() + 5
        while server.log().count("http request aborted") < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        log = server.log()
        aborted = [line for line in log.splitlines() if "http request aborted" in line]
        assert len(aborted) == 3, log
        for line in aborted:
            assert "level=INFO" in line and "remote=127.0.0.1" in line, line
            assert "method=POST path=/api/rooms" in line, line
        assert "Traceback" not in log and "level=ERROR" not in log, log
        # The server still serves everyone else.
        status, body = await http_json("GET", f"{server.http}/health")
        assert status == 200, body
    finally:
        assert server.stop() == 0
