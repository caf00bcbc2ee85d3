"""gunicorn's own refusals answered with the JSON error envelope instead of its ``text/html`` page.

gunicorn refuses some requests before Flask sees them: a request line over ``limit_request_line``
(414, e.g. a long query string), headers past the caps of :mod:`api.request_limits` (431), a malformed
request line or header (400). It writes those answers with ``gunicorn.util.write_error``;
:func:`install` (called by ``python -m api`` before gunicorn starts) replaces that function, so every
answer of the service, these included, is ``application/json`` with the envelope of :mod:`api.errors`.
"""

from __future__ import annotations

import json
import socket

from gunicorn import util

from jobs.errors import ErrorCode


def _code(status: int) -> ErrorCode:
    if status == 431:
        return ErrorCode.HEADERS_TOO_LARGE
    return ErrorCode.BAD_REQUEST if 400 <= status < 500 else ErrorCode.INTERNAL_ERROR


def error_response(status: int, reason: str, message: str) -> bytes:
    """The whole HTTP response gunicorn sends for a request it refused itself."""
    envelope: dict[str, object] = {"error": {"code": _code(status).value, "message": message or reason, "details": {}}}
    body = json.dumps(envelope).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error`` (same arguments)."""
    util.write_nonblock(sock, error_response(status_int, reason, mesg))


def install() -> None:
    """Make gunicorn answer its own refusals with the envelope (process-wide; workers inherit it)."""
    util.write_error = write_json_error
