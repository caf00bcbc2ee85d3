"""One error tree for the service: every error the API, the workers or the shared layer raise on
purpose is a :class:`ServiceError` carrying an :class:`ErrorCode`.

The code is what a client sees (``error.code`` in the API envelope, or in a failed job's record); the
message says the details and names the field, limit or setting involved. Stdlib only.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every ``error.code`` the service answers or records, defined once."""

    # a failed job or voice (the record's error.code)
    INVALID_INPUT = "invalid_input"  # anything the request got wrong that no retry fixes
    TEXT_TOO_LONG = "text_too_long"  # a piece of text that split_text could not fit; also the API's 413
    INVALID_AUDIO = "invalid_audio"  # reference audio that is not decodable audio
    UNSUPPORTED_FORMAT = "unsupported_format"
    VOICE_NOT_FOUND = "voice_not_found"
    VOICE_NOT_READY = "voice_not_ready"  # the voice's latents failed to encode
    RENDER_FAILED = "render_failed"  # an unexpected error inside the model
    OUT_OF_MEMORY = "out_of_memory"  # the render ran out of GPU or host memory; shorter text or ECHO_BATCH_SIZE fits
    CANCELED = "canceled"
    STORAGE_UNAVAILABLE = "storage_unavailable"  # transient storage errors outlived the retries
    TIME_LIMIT = "time_limit"  # the job ran past its time limit
    WORKER_LOST = "worker_lost"  # the worker died on this job MAX_DELIVERIES times
    EXPIRED = "expired"  # the job waited in the queue past its deadline
    # the API's answers
    INVALID_REQUEST = "invalid_request"  # 422 naming the field
    BAD_REQUEST = "bad_request"  # 400 from the HTTP layer (a malformed request line or header)
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405, with Allow
    INVALID_JSON = "invalid_json"  # 400: a body that is not a JSON object
    NOT_FOUND = "not_found"  # 404, for unknown ids and other keys' objects alike
    UNAUTHORIZED = "unauthorized"
    READ_ONLY_VOICE = "read_only_voice"  # 403: operator voices cannot be deleted through the API
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    CONFLICT = "conflict"  # 409: the object's state does not allow this (e.g. retrying a running book)
    NOT_READY = "not_ready"  # 409: audio of a job that has not succeeded
    AUDIO_GONE = "audio_gone"  # 410: the result expired from storage
    PAYLOAD_TOO_LARGE = "payload_too_large"
    HEADERS_TOO_LARGE = "headers_too_large"  # 431: a header field too long, or too many of them
    METADATA_TOO_LARGE = "metadata_too_large"
    REFERENCE_TOO_LONG = "reference_too_long"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"  # 429: more requests this minute than ECHO_RATE_LIMIT_PER_MIN
    QUOTA_EXCEEDED = "quota_exceeded"  # 429: ECHO_MAX_QUEUED_JOBS / ECHO_MAX_QUEUED_BOOKS are queued or running
    TIMEOUT = "timeout"  # 504: a synchronous wait ran out
    UNAVAILABLE = "unavailable"  # 503: Redis, storage or the queue is unreachable
    INTERNAL_ERROR = "internal_error"  # 500: logged, never expected
    # settings and storage
    INVALID_SETTING = "invalid_setting"
    STORAGE_ERROR = "storage_error"  # storage refused an operation for a reason a retry will not fix
    OBJECT_NOT_FOUND = "object_not_found"
    # books
    INVALID_BOOK = "invalid_book"  # not a readable EPUB / Markdown / text book, or unsafe
    BOOK_HAS_NO_TEXT = "book_has_no_text"  # a readable book with nothing to speak (images only, empty)
    BOOK_DRM = "book_drm"  # an EPUB whose content is encrypted


class ServiceError(Exception):
    """Root of the service's own errors: a code clients can branch on and a message that names the cause."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
