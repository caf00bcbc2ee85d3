"""Limits on request headers, answered with the JSON envelope (431) instead of gunicorn's HTML page.

gunicorn parses headers before Flask sees a request and refuses what passes its own limits with a
``text/html`` page. ``python -m api`` therefore runs gunicorn with generous caps (``GUNICORN_*``) and this
hook enforces the limits a client meets: ``MAX_HEADER_FIELD_BYTES`` per field (name, ``: `` and value)
and ``MAX_HEADER_FIELDS`` fields, the same values as gunicorn's defaults. Past the gunicorn caps (a field
over 64 KiB, more than 256 fields) gunicorn still answers with its own plain 431.
"""

from __future__ import annotations

from flask import request

from api.errors import APIError
from jobs.errors import ErrorCode

MAX_HEADER_FIELD_BYTES = 8190  # gunicorn's default limit_request_field_size
MAX_HEADER_FIELDS = 100  # gunicorn's default limit_request_fields
GUNICORN_FIELD_SIZE = 64 * 1024  # what gunicorn itself lets through to this hook
GUNICORN_FIELDS = 256


def check_headers() -> None:
    """``before_request``: 431 with the envelope naming the limit when the headers are too large."""
    headers = list(request.headers.items())
    if len(headers) > MAX_HEADER_FIELDS:
        raise APIError(
            431,
            ErrorCode.HEADERS_TOO_LARGE,
            f"the request has {len(headers)} header fields; the limit is MAX_HEADER_FIELDS={MAX_HEADER_FIELDS}",
            {"limit": "MAX_HEADER_FIELDS", "max_fields": MAX_HEADER_FIELDS, "fields": len(headers)},
        )
    for name, value in headers:
        size = len(name) + 2 + len(value)  # WSGI header values are latin-1: one character per byte
        if size > MAX_HEADER_FIELD_BYTES:
            raise APIError(
                431,
                ErrorCode.HEADERS_TOO_LARGE,
                f"header {name} is {size} bytes; the limit is MAX_HEADER_FIELD_BYTES={MAX_HEADER_FIELD_BYTES} "
                "per header field",
                {"limit": "MAX_HEADER_FIELD_BYTES", "max_bytes": MAX_HEADER_FIELD_BYTES, "header": name},
            )
