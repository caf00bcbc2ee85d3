"""Audiobooks: take a book (a file, or chapters as JSON), check it, store it and queue its planning.

Nothing is stored or queued until the book has been read and every option checked: a bad book or
option answers 4xx and leaves nothing behind. Rendering and assembly happen on the workers; this
module reads the book store to answer progress and presigns the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from typing import Any

from flask import redirect, request, url_for
from werkzeug.wrappers import Response

from api import jobs_service, voices_service, webhooks_service
from api.book_schemas import BookCreate, BookOptions
from api.downloads import stream_object
from api.errors import APIError, idempotency_conflict, invalid, not_found
from api.quotas import quota_exceeded
from api.services import services
from api.uploads import form_fields, json_body
from jobs import contract
from jobs.books import BookRequest
from jobs.bookstore import BookRecord
from jobs.contract import ContractError, JobState
from jobs.errors import ErrorCode
from jobs.ingest import Book, BookRejected, Chapter, IngestLimits, InvalidChapterSelection, read_book
from jobs.ingest.textfile import paragraphs_of
from jobs.jobstore import IdempotencyConflict
from jobs.record_store import QuotaExceeded
from jobs.records import fingerprint, new_id
from jobs.views import book_data

log = logging.getLogger(__name__)
_FORM_JSON = ("overrides", "select_chapters")
_FORM_NUMBERS = ("seed", "pause_sentence_s", "pause_paragraph_s", "pause_chapter_s", "loudness_lufs")


def _form_options() -> dict[str, Any]:
    """The multipart form's options as BookOptions takes them (``chapters`` is the selection here)."""
    data = webhooks_service.form_events(form_fields(json_fields=_FORM_JSON, files=("file",)))
    if "chapters" in data:
        raw = str(data.pop("chapters"))
        try:
            data["select_chapters"] = [int(p) for p in raw.replace("[", "").replace("]", "").split(",") if p.strip()]
        except ValueError:
            raise invalid("chapters", "must be chapter indices separated by commas, e.g. 0,2,5") from None
    for name in _FORM_NUMBERS:
        if name in data:
            try:
                data[name] = json.loads(data[name])
            except (TypeError, ValueError):
                raise invalid(name, "must be a number") from None
    return data


def _read_upload(limits: IngestLimits) -> tuple[Book, bytes, str]:
    """The uploaded book read and checked: ``(book, file bytes, extension)``."""
    file = request.files.get("file")
    if file is None:
        raise invalid("file", "a book file is required (EPUB, Markdown or plain text, multipart field 'file')")
    data = file.read()
    try:
        book = read_book(data, file.filename or "book", content_type=file.mimetype, limits=limits)
    except BookRejected as exc:
        raise _rejected(exc) from None
    extension = {"epub": "epub", "markdown": "md", "text": "txt"}[book.source_format]
    return book, data, extension


def _rejected(exc: BookRejected) -> APIError:
    message = exc.message
    if "max_characters=" in message:
        message += " (the setting ECHO_MAX_BOOK_CHARS)"
    return APIError(422, exc.code, f"file: {message}", {"errors": [{"field": "file", "message": message}]})


def _book_from_json(body: BookCreate) -> Book:
    chapters = tuple(Chapter(c.title, tuple(paragraphs_of(c.text))) for c in body.chapters)
    return Book(body.title or "Untitled", body.author, chapters, None, "json")


def parse_submission(limits: IngestLimits) -> tuple[BookOptions, Book, bytes, str]:
    """``(options, book, source bytes, source extension)`` from multipart (file + form) or JSON."""
    if request.mimetype == "multipart/form-data":
        options = BookOptions.model_validate(_form_options())
        book, data, extension = _read_upload(limits)
        return options, book, data, extension
    if request.mimetype == "application/json":
        body = BookCreate.model_validate(json_body())
        book = _book_from_json(body)
        if book.characters == 0:
            raise APIError(422, ErrorCode.BOOK_HAS_NO_TEXT, "chapters: the book has no text to speak")
        if book.characters > limits.max_characters:
            raise _limit("chapters", book.characters, limits.max_characters)
        options = BookOptions.model_validate(body.model_dump(exclude={"chapters"}, exclude_unset=True))
        return options, book, request.get_data(), "json"
    raise APIError(
        415,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        "send multipart/form-data with a book in the field "
        "'file', or application/json with {title, author, chapters: [{title, text}]}",
    )


def _limit(field: str, characters: int, limit: int) -> APIError:
    return APIError(
        413,
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"{field}: the book has {characters:,} characters; the limit is ECHO_MAX_BOOK_CHARS={limit:,}",
        {"limit": "ECHO_MAX_BOOK_CHARS", "field": field},
    )


def _request(book_id: str, owner: str, options: BookOptions, book: Book) -> BookRequest:
    voice = voices_service.resolve(owner, options.voice) if options.voice else None
    voice_id = voice.id if voice is not None else None
    if options.select_chapters is not None:
        try:
            book.select(options.select_chapters)
        except InvalidChapterSelection as exc:
            raise invalid("select_chapters", exc.message) from None
    req = BookRequest(
        book_id=book_id,
        seed=secrets.randbelow(2**32) if options.seed is None else options.seed,
        owner=owner,
        voice_id=voice_id,
        preset=options.preset,
        overrides=options.overrides.model_dump(exclude_unset=True),
        format=options.format,
        pauses=options.pauses(),
        loudness_lufs=options.loudness_lufs,
        title=options.title,
        author=options.author,
        chapters=tuple(sorted(set(options.select_chapters))) if options.select_chapters is not None else None,
    )
    try:
        req.validate()  # the contract's own check behind the schema
    except ContractError as exc:
        raise APIError(422, ErrorCode.INVALID_REQUEST, str(exc)) from None
    return req


def submit(owner: str, idempotency_key: str | None) -> tuple[BookRecord, bool]:
    """Read, check, store and queue a book; ``(record, created)`` (False: an idempotent replay)."""
    s = services()
    options, book, source, extension = parse_submission(IngestLimits(max_characters=s.settings.max_book_chars))
    req = _request(new_id("book"), owner, options, book)
    webhook = webhooks_service.checked(options.webhook, options.webhook_events)
    body_fp = fingerprint({"options": options.model_dump(mode="json"), "source": hashlib.sha256(source).hexdigest()})
    info = {
        "source_format": book.source_format,
        "characters": book.characters,
        "chapters_in_book": len(book.chapters),
        "cover_media_type": book.cover.media_type if book.cover else None,
    }
    try:
        record, created = s.books.create(
            owner,
            req.to_dict(),
            title=options.title or book.title,
            author=options.author or book.author,
            info=info,
            idempotency_key=idempotency_key,
            body_fingerprint=body_fp,
            book_id=req.book_id,
            max_active=s.settings.max_queued_books,
            webhook=webhook,
        )
    except QuotaExceeded as exc:
        raise quota_exceeded(exc) from None
    except IdempotencyConflict as exc:
        raise idempotency_conflict(exc, "book", "book_id") from None
    if created:
        try:
            content_type = "application/json" if extension == "json" else "application/octet-stream"
            s.storage.put_bytes(contract.book_source_key(req.book_id, extension), source, content_type=content_type)
            s.storage.put_bytes(
                contract.book_content_key(req.book_id),
                json.dumps(book.to_dict()).encode(),
                content_type="application/json",
            )
            if book.cover is not None:
                s.storage.put_bytes(
                    contract.book_cover_key(req.book_id), book.cover.data, content_type=book.cover.media_type
                )
            s.queue.send_book_plan(req.book_id)
        except jobs_service.UNAVAILABLE as exc:
            log.error("could not store or queue book %s: %s", req.book_id, exc)
            s.books.fail(req.book_id, ErrorCode.UNAVAILABLE, "the book could not be stored or queued; submit it again")
            raise APIError(503, ErrorCode.UNAVAILABLE, "storage or the queue is unavailable; try again") from exc
        jobs_service.report_sent(s.books, req.book_id)
    return record, created


def get_owned(owner: str, book_id: str) -> BookRecord:
    record = services().books.get(book_id, owner=owner)
    if record is None:
        raise not_found("audiobook", book_id)
    return record


def _file_url(key: str, filename: str, local_endpoint: str, **values: Any) -> str:
    return services().storage.presign(key, filename=filename) or url_for(local_endpoint, _external=True, **values)


def view(record: BookRecord) -> dict[str, Any]:
    """The public JSON of a book (book_schemas.Book): the record's own view (jobs.views) with file URLs
    presigned afresh on every call, the ETA and the webhook state."""
    data = book_data(record)
    for chapter, c in zip(data["chapters"], record.chapters, strict=True):
        chapter["url"] = None
        if c.file is not None:
            name = f"{c.index:03d}.{contract.OUTPUT_FORMATS[c.file['format']].extension}"
            chapter["url"] = _file_url(
                str(c.file["key"]), name, "books.chapter_audio", book_id=record.id, chapter=c.index
            )
    if data["result"] is not None and record.result:
        m4b = _file_url(str(record.result["key"]), f"{record.id}.m4b", "books.book_audio", book_id=record.id)
        data["result"] = {"m4b_url": m4b, **data["result"]}
    self_url = url_for("books.get_book", book_id=record.id)
    return data | {
        "eta_s": record.eta_s(services().books.clock()),
        "webhook": record.webhook,
        "links": {"self": self_url, "audio": f"{self_url}/audio", "retry": f"{self_url}/retry"},
    }


def list_owned(owner: str) -> dict[str, Any]:
    try:
        limit = int(request.args.get("limit", "20"))
        before = float(request.args["before"]) if "before" in request.args else None
    except ValueError:
        raise invalid("limit", "limit must be an integer and before a number (a created_ts)") from None
    if not 1 <= limit <= 100:
        raise invalid("limit", "must be between 1 and 100")
    records = services().books.list_books(owner, limit=limit, before=before)
    more = len(records) == limit
    return {"books": [view(r) for r in records], "next_before": records[-1].created_ts if more else None}


def cancel(owner: str, book_id: str) -> BookRecord:
    """Queued or running → canceled (its queued groups stop at once; done segments stay cached)."""
    get_owned(owner, book_id)
    record = services().books.request_cancel(book_id) or get_owned(owner, book_id)
    webhooks_service.completed("book", record)
    return record


def retry(owner: str, book_id: str) -> BookRecord:
    """A failed or canceled book is planned again: only segments not yet done are rendered."""
    record = get_owned(owner, book_id)
    s = services()
    if not s.books.reopen(book_id):
        raise APIError(
            409,
            ErrorCode.CONFLICT,
            f"audiobook {book_id} is {record.status.value}; only a failed or canceled book can be retried",
            {"status": record.status.value},
        )
    s.queue.send_book_plan(book_id)
    return get_owned(owner, book_id)


def book_audio(owner: str, book_id: str) -> Response:
    record = get_owned(owner, book_id)
    if record.status is not JobState.SUCCEEDED or not record.result:
        raise APIError(
            409,
            ErrorCode.NOT_READY,
            f"audiobook {book_id} is {record.status.value}; its M4B exists once it succeeded",
            {"status": record.status.value},
        )
    key = str(record.result["key"])
    url = services().storage.presign(key, filename=f"{book_id}.m4b")
    if url:
        return redirect(url, code=302)
    return stream_object(
        key,
        "audio/mp4",
        disposition=f'attachment; filename="{book_id}.m4b"',
        gone=f"the M4B of audiobook {book_id} is no longer in storage",
    )


def chapter_audio(owner: str, book_id: str, chapter: int) -> Response:
    record = get_owned(owner, book_id)
    found = next((c for c in record.chapters if c.index == chapter), None)
    if found is None:
        raise not_found("chapter", str(chapter))
    if found.file is None:
        raise APIError(409, ErrorCode.NOT_READY, f"chapter {chapter} is {found.status}", {"status": found.status})
    fmt = str(found.file["format"])
    name = f"{chapter:03d}.{contract.OUTPUT_FORMATS[fmt].extension}"
    url = services().storage.presign(str(found.file["key"]), filename=name)
    if url:
        return redirect(url, code=302)
    return stream_object(
        str(found.file["key"]),
        contract.OUTPUT_FORMATS[fmt].content_type,
        disposition=f'attachment; filename="{name}"',
        gone=f"chapter {chapter} of audiobook {book_id} is no longer in storage",
    )
