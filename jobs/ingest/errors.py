"""Errors of book ingest: a book the service will not read, and a chapter selection that does not fit the book.

Both are :class:`~jobs.errors.ServiceError`\\ s; the API answers them with 422 and their code.
"""

from __future__ import annotations

from jobs.errors import ErrorCode, ServiceError


class BookRejected(ServiceError):
    """Raised when an uploaded book cannot be read: not a book, unsafe, DRM-protected, or without text.

    ``code`` is :attr:`ErrorCode.INVALID_BOOK` (the default), :attr:`ErrorCode.BOOK_HAS_NO_TEXT` or
    :attr:`ErrorCode.BOOK_DRM`; the message says exactly what is wrong and names the limit involved, if any.
    """

    code = ErrorCode.INVALID_BOOK


class InvalidChapterSelection(ServiceError):
    """Raised when :meth:`Book.select` is asked for chapters the book does not have."""

    code = ErrorCode.INVALID_INPUT
