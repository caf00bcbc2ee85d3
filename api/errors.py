"""One JSON error envelope for everything the API refuses: ``{"error": {"code", "message", "details"}}``.

Views raise :class:`APIError` (or let pydantic's ``ValidationError`` and werkzeug's ``HTTPException``
escape); the handlers registered by :func:`register_error_handlers` turn all of them into the envelope.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, current_app, jsonify, request
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from jobs.errors import ErrorCode, ServiceError
from jobs.jobstore import IdempotencyConflict
from jobs.storage import StorageError

log = logging.getLogger(__name__)
_DRAIN_CAP = 256 * 1024 * 1024  # read at most this much of a refused body so the client sees our answer


class APIError(ServiceError):
    """Raised by views and services; becomes the JSON envelope with ``status``."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status, self.details = status, details or {}
        self.headers = headers or {}


def not_found(what: str, ident: str) -> APIError:
    """404 for unknown ids and for other keys' objects alike (no existence oracle)."""
    return APIError(404, ErrorCode.NOT_FOUND, f"no {what} {ident!r}", {"id": ident})


def idempotency_conflict(exc: IdempotencyConflict, what: str, id_field: str) -> APIError:
    """409 for an Idempotency-Key reused with another ``what``; ``details[id_field]`` is the first one."""
    return APIError(
        409,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        f"this Idempotency-Key was used with a different {what}",
        {id_field: exc.job_id},
    )


def invalid(field: str, message: str, **details: Any) -> APIError:
    """422 naming the offending field."""
    return APIError(
        422,
        ErrorCode.INVALID_REQUEST,
        f"{field}: {message}",
        {"errors": [{"field": field, "message": message, **details}]},
    )


def envelope(status: int, code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message, "details": details or {}}}), status


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"field": _field(e["loc"]), "message": e["msg"], "type": e["type"]} for e in exc.errors()]


def _api_error(exc: APIError) -> tuple[Response, int]:
    response, status = envelope(exc.status, exc.code, exc.message, exc.details)
    response.headers.update(exc.headers)
    return response, status


def _validation_error(exc: ValidationError) -> tuple[Response, int]:
    errors = validation_details(exc)
    message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return envelope(422, ErrorCode.INVALID_REQUEST, message, {"errors": errors})


def _too_large(exc: RequestEntityTooLarge) -> tuple[Response, int]:
    _drain()
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return envelope(
        413,
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"request body is larger than ECHO_MAX_UPLOAD_BYTES={limit} bytes",
        {"limit": "ECHO_MAX_UPLOAD_BYTES", "max_bytes": limit, "content_length": request.content_length},
    )


def _drain() -> None:
    """Read the refused body so that the client, still sending, can read the 413."""
    stream, left = request.environ.get("wsgi.input"), min(request.content_length or 0, _DRAIN_CAP)
    try:
        while stream is not None and left > 0:
            chunk = stream.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)
    except OSError:  # the client gave up: nothing to answer
        pass


# werkzeug's own refusals (routing, malformed requests) under our codes
_HTTP_CODES = {
    400: ErrorCode.BAD_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    fallback = ErrorCode.BAD_REQUEST if 400 <= status < 500 else ErrorCode.INTERNAL_ERROR
    response, status = envelope(status, _HTTP_CODES.get(status, fallback), exc.description or exc.name)
    allowed = getattr(exc, "valid_methods", None)  # set on MethodNotAllowed
    if exc.code == 405 and allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response, status


def _unavailable(exc: Exception) -> tuple[Response, int]:
    log.error("backend unavailable on %s %s: %s", request.method, request.path, exc)
    return envelope(
        503,
        ErrorCode.UNAVAILABLE,
        "storage, Redis or the queue is unavailable; try again shortly",
        {"backend": type(exc).__name__},
    )


def _unexpected(exc: Exception) -> tuple[Response, int]:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return envelope(500, ErrorCode.INTERNAL_ERROR, "the server failed on this request; it is logged")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, _http_error)
    for backend_error in (StorageError, OperationalError, redis.RedisError):
        app.register_error_handler(backend_error, _unavailable)
    app.register_error_handler(Exception, _unexpected)
