"""What comes next for a book: chapters whose segments are all done get assembled, and once every
chapter is, the M4B. Queued whenever a step may have completed something, so a lost message is
queued again by the next step that looks (or by ``POST /v1/audiobooks/{id}/retry``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from jobs.bookstore import BookRecord, BookStore
from jobs.contract import BOOK_ASSEMBLE, BOOK_ASSEMBLE_CHAPTER, QUEUE_ASSEMBLY, JobState

log = logging.getLogger(__name__)

Send = Callable[[str, dict[str, Any], str], None]  # (task name, kwargs, queue)


def queue_ready_work(
    books: BookStore, send: Send, book_id: str, chapters: Iterable[int] | None = None
) -> BookRecord | None:
    """Queue the assembly of each chapter (of ``chapters``, default all) whose segments are done and
    that has no file yet, and the book's assembly when every chapter has one. Returns the record."""
    record = books.get(book_id)
    if record is None or record.status is not JobState.RUNNING or not record.planned:
        return record
    wanted = None if chapters is None else set(chapters)
    for chapter in record.chapters:
        complete = chapter.segments_done >= chapter.segments_total
        if complete and chapter.file is None and (wanted is None or chapter.index in wanted):
            send(BOOK_ASSEMBLE_CHAPTER, {"book_id": book_id, "chapter": chapter.index}, QUEUE_ASSEMBLY)
    if record.chapters and all(c.file is not None for c in record.chapters):
        send(BOOK_ASSEMBLE, {"book_id": book_id}, QUEUE_ASSEMBLY)
    return record
