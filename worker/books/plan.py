"""Plan a book (CPU): split its chapters into segments, count what the cache already holds, and queue
the rest as groups of similar length on the bulk queue.

Each paragraph is normalised for speech and split with ``echo_tts.split_text`` (sentence boundaries
first, ``ECHO_MAX_PIECE_BYTES`` per generation). A segment that ends its paragraph gets the paragraph
pause, one that ends a sentence the sentence pause, one cut inside a sentence a clause pause.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from echo_tts.text import split_text
from jobs.books import BookRequest, PlannedSegment, SegmentEnd, group_segments, segment_seed
from jobs.contract import BOOK_RENDER_GROUP, QUEUE_BULK, book_content_key, segment_cache_key
from jobs.errors import ErrorCode
from jobs.ingest import Book, normalize_for_speech
from jobs.render_stats import RenderStats

from ..engine import Engine
from .flow import Send, queue_ready_work
from .segments import digest_of, settings_of, store_plan, voice_identity

log = logging.getLogger(__name__)
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")


def split_chapters(
    book: Book, request: BookRequest, max_piece_bytes: int
) -> tuple[list[PlannedSegment], list[dict[str, Any]]]:
    """The selected chapters' segments, in book order, and per chapter ``{index, title, segments_total}``
    (chapters without a word to speak are left out)."""
    selection = request.chapters if request.chapters is not None else range(len(book.chapters))
    segments: list[PlannedSegment] = []
    chapters: list[dict[str, Any]] = []
    for index in selection:
        if index >= len(book.chapters):
            continue  # checked by the API against the parsed book; a stale plan skips it
        chapter = book.chapters[index]
        first = len(segments)
        for paragraph in chapter.paragraphs:
            pieces = [p.strip() for p in split_text(normalize_for_speech(paragraph), max_piece_bytes)]
            pieces = [p for p in pieces if p]
            for k, text in enumerate(pieces):
                if k == len(pieces) - 1:
                    end = SegmentEnd.PARAGRAPH
                else:
                    end = SegmentEnd.SENTENCE if _SENTENCE_END.search(text) else SegmentEnd.CLAUSE
                segments.append(PlannedSegment(len(segments), index, text, segment_seed(request.seed, text), end))
        if len(segments) > first:
            chapters.append({"index": index, "title": chapter.title, "segments_total": len(segments) - first})
    return segments, chapters


def render_revision(engine: Engine) -> str | None:
    """The model revision the rendering workers announce, when they agree on one (else None: the
    render workers then check the cache themselves)."""
    revisions = {
        str(beat.get("model_revision"))
        for beat in engine.jobs.live_workers()
        if beat.get("role", "render") == "render" and beat.get("model_revision") not in (None, "unknown")
    }
    return revisions.pop() if len(revisions) == 1 else None


def plan_book(engine: Engine, send: Send, book_id: str) -> dict[str, Any]:
    """Plan ``book_id`` and queue its groups; safe to run again (a retry re-plans: segments already
    done stay done, and only the rest is queued)."""
    books = engine.books
    record = books.get(book_id)
    if record is None or books.is_stopped(book_id):
        return {"book_id": book_id, "status": "skipped"}
    request = BookRequest.from_dict(record.request)
    book = Book.from_dict(json.loads(engine.storage.get_bytes(book_content_key(book_id))))
    segments, chapters = split_chapters(book, request, engine.settings.max_piece_bytes)
    if not segments:
        books.fail(book_id, ErrorCode.BOOK_HAS_NO_TEXT, "the selected chapters have no words to speak")
        return {"book_id": book_id, "status": "failed"}
    store_plan(engine.storage, book_id, segments)
    if not books.mark_planned(book_id, chapters, len(segments)):
        return {"book_id": book_id, "status": "stopped"}
    done = books.segments_done(book_id)
    pending = [s for s in segments if s.index not in done]
    revision = render_revision(engine)
    cached = 0
    if revision is not None:
        voice, settings = voice_identity(engine.voices, request), settings_of(request)
        still = []
        for segment in pending:
            digest = digest_of(segment, model_revision=revision, voice=voice, settings=settings)
            if engine.storage.exists(segment_cache_key(digest)):
                books.segment_done(book_id, segment.index, segment.chapter, digest, cached=True)
                cached += 1
            else:
                still.append(segment)
        pending = still
    # hits only: a segment not found here is looked up again where it renders (worker/books/render.py)
    RenderStats(engine.jobs.r, prefix=engine.jobs.prefix).segment_cache_lookups(hits=cached, misses=0)
    groups = group_segments(pending, engine.settings.book_group_size)
    for group in groups:
        send(BOOK_RENDER_GROUP, {"book_id": book_id, "segments": group}, QUEUE_BULK)
    queue_ready_work(books, send, book_id)
    log.info(
        "book %s planned: %d segments, %d done before, %d cached, %d groups queued",
        book_id,
        len(segments),
        len(done),
        cached,
        len(groups),
    )
    return {"book_id": book_id, "status": "planned", "segments": len(segments), "groups": len(groups)}
