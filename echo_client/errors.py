"""The client's errors: one for every refusal the API answers, subclasses where no answer came back."""

from __future__ import annotations

from typing import Any

__all__ = ["ClientError", "ServerUnreachable", "WaitTimedOut"]


class ClientError(Exception):
    """Raised when the API refuses a request: its ``{"error": {"code", "message", "details"}}`` envelope.

    ``status`` is the HTTP status (``None`` when no HTTP answer came back), ``code`` the API's error code
    (``not_found``, ``invalid_request``, ...; ``http_error`` when the answer had no envelope, e.g. a proxy's).
    """

    def __init__(self, status: int | None, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}

    @property
    def transient(self) -> bool:
        """True when trying again later may succeed (no answer, or the server said it is unavailable)."""
        return self.status is None or self.status in (502, 503, 504)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status!r}, {self.code!r}, {self.message!r})"


class ServerUnreachable(ClientError):
    """Raised when no HTTP answer came back: connection refused, name not found, TLS failure, or a timeout."""

    def __init__(self, message: str, *, code: str = "unreachable") -> None:
        super().__init__(None, code, message)


class WaitTimedOut(ClientError):
    """Raised by ``wait_job``/``wait_book`` when the job or book has not finished within the given timeout."""

    def __init__(self, message: str, last: dict[str, Any]) -> None:
        super().__init__(None, "wait_timeout", message, {"last": last})
        self.last = last
