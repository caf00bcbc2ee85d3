"""Serving a stored object through the API: one streamed answer for every storage backend.

Used where the API must hand out bytes itself (local-directory storage has no presigned URLs, and
``POST /v1/audio/speech`` answers with the audio). A missing object is 410: the record says it existed.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Response, stream_with_context

from api.errors import APIError
from api.services import services
from jobs.errors import ErrorCode
from jobs.storage import ObjectNotFound


def stream_object(key: str, content_type: str, *, gone: str, disposition: str | None = None) -> Response:
    """The object ``key`` as the response body, streamed; ``gone`` is the 410 message when it is missing."""
    try:
        stored = services().storage.open(key)
    except ObjectNotFound:
        raise APIError(410, ErrorCode.AUDIO_GONE, gone) from None

    def body() -> Iterator[bytes]:
        try:
            yield from stored.chunks
        finally:
            stored.close()

    response = Response(stream_with_context(body()), mimetype=content_type)
    response.content_length = stored.size
    response.headers["Content-Type"] = content_type  # mimetype= may append a charset otherwise
    if disposition:
        response.headers["Content-Disposition"] = disposition
    return response
