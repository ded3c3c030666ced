"""The log filter that turns a vanished client's traceback into one line, and nothing else."""

from __future__ import annotations

import logging
import sys

from roomcast.logs import ClientGone


def record(error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        exc_info,
    )


def test_a_connection_lost_mid_request_becomes_one_info_line() -> None:
    entry = record(ConnectionResetError("Connection lost"))
    assert ClientGone().filter(entry)
    assert entry.levelno == logging.INFO and entry.exc_info is None
    formatted = logging.Formatter("%(levelname)s %(message)s").format(entry)
    assert formatted == (
        "INFO http request aborted by the client remote=127.0.0.1 "
        "error=ConnectionResetError('Connection lost')"
    )


def test_other_errors_keep_their_level_and_traceback() -> None:
    entry = record(ValueError("a bug"))
    assert ClientGone().filter(entry)
    assert entry.levelno == logging.ERROR and entry.exc_info is not None
    assert "Traceback" in logging.Formatter().format(entry)
