"""One log line per event, ``key=value`` pairs after a timestamp and level."""

from __future__ import annotations

import logging
import sys


class ClientGone(logging.Filter):
    """aiohttp's "Error handling request" for a client that went away, as one line.

    A client that closes its connection while a handler still reads the
    request body (a POST cut off mid-body) makes the read raise a
    ``ConnectionError``, which aiohttp logs as an ERROR with a full traceback:
    a slow or hostile client could write pages of them. Nothing failed on
    this side, so it becomes one INFO line; every other error is left alone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ConnectionError) and str(record.msg).startswith(
            "Error handling request"
        ):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
            record.msg = "http request aborted by the client remote=%s error=%r"
            record.args = (remote, error)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s event=%(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log would add a line per HTTP request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientGone) for f in server.filters):
        server.addFilter(ClientGone())
