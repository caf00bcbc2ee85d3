"""/v1/audiobooks: submit a book, follow it chapter by chapter, cancel, retry, download."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from werkzeug.wrappers import Response as RawResponse

from api import books_service, jobs_service
from api.auth import authenticate, current_owner

bp = Blueprint("books", __name__, url_prefix="/v1/audiobooks")
bp.before_request(authenticate)


@bp.post("")
def create_book() -> tuple[Response, int, dict[str, str]]:
    record, created = books_service.submit(current_owner(), jobs_service.idempotency_key())
    view = books_service.view(record)
    headers = {"Location": view["links"]["self"]}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(view), 202, headers


@bp.get("")
def list_books() -> Response:
    return jsonify(books_service.list_owned(current_owner()))


@bp.get("/<book_id>")
def get_book(book_id: str) -> Response:
    return jsonify(books_service.view(books_service.get_owned(current_owner(), book_id)))


@bp.delete("/<book_id>")
def cancel_book(book_id: str) -> Response:
    return jsonify(books_service.view(books_service.cancel(current_owner(), book_id)))


@bp.post("/<book_id>/retry")
def retry_book(book_id: str) -> tuple[Response, int]:
    return jsonify(books_service.view(books_service.retry(current_owner(), book_id))), 202


@bp.get("/<book_id>/audio")
def book_audio(book_id: str) -> RawResponse:
    return books_service.book_audio(current_owner(), book_id)


@bp.get("/<book_id>/chapters/<int:chapter>/audio")
def chapter_audio(book_id: str, chapter: int) -> RawResponse:
    return books_service.chapter_audio(current_owner(), book_id, chapter)
