"""Assemble a book (CPU): each chapter from its cached segments, then one M4B from the chapters.

A chapter: every segment's audio from the cache, its leading and trailing silence trimmed, joined
with the book's pauses, normalised (ACX by default, or a LUFS target), stored twice: a FLAC master
(the M4B's source) and the chapter file in the book's format. The book: the masters in order,
encoded once into AAC with a chapter marker at each chapter's first sample, title, author, cover.
Both steps are idempotent: an assembled chapter or a finished book is left as it is.
"""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from echo_tts.audio import encode_audio, trim_silence
from jobs.books import BookRequest
from jobs.contract import (
    OUTPUT_FORMATS,
    JobState,
    book_chapter_key,
    book_chapter_master_key,
    book_cover_key,
    book_m4b_key,
    segment_cache_key,
)
from jobs.errors import ErrorCode
from jobs.storage import ObjectNotFound

from ..assembly import ChapterAudio, PauseSettings, Segment, encode_chapter, join_chapter, normalize_for_acx
from ..assembly.m4b import write_m4b
from ..engine import Engine
from .flow import Send, queue_ready_work
from .segments import load_plan

log = logging.getLogger(__name__)
TRIM_KEEP_S = 0.03  # silence kept at each end of a trimmed segment; the pauses are added on top
M4B_CONTENT_TYPE = "audio/mp4"


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return np.asarray(samples, dtype=np.float32), int(rate)


def assemble_chapter(engine: Engine, send: Send, book_id: str, chapter: int) -> dict[str, Any]:
    """Assemble ``chapter`` once all its segments are done; then queue what became ready."""
    books = engine.books
    record = books.get(book_id)
    if record is None or record.status is not JobState.RUNNING:
        return {"book_id": book_id, "status": "skipped"}
    progress = next((c for c in record.chapters if c.index == chapter), None)
    if progress is None or progress.file is not None or progress.segments_done < progress.segments_total:
        queue_ready_work(books, send, book_id)
        return {"book_id": book_id, "chapter": chapter, "status": "not needed"}
    request = BookRequest.from_dict(record.request)
    digests = books.segments_done(book_id)
    pieces: list[Segment] = []
    rate = 0
    for segment in (s for s in load_plan(engine.storage, book_id) if s.chapter == chapter):
        try:
            samples, rate = _decode(engine.storage.get_bytes(segment_cache_key(digests[segment.index])))
        except ObjectNotFound:  # evicted from the cache since it was counted: un-count it, so a retry renders it
            books.segment_lost(book_id, segment.index, chapter)
            books.fail(
                book_id,
                ErrorCode.STORAGE_ERROR,
                f"segment {segment.index} of chapter {chapter} left the "
                f"cache before assembly; POST /v1/audiobooks/{book_id}/retry renders it again",
            )
            return {"book_id": book_id, "chapter": chapter, "status": "failed"}
        pieces.append(Segment(trim_silence(samples, rate, keep_s=TRIM_KEEP_S), segment.end))
    joined = join_chapter(pieces, rate, pauses=PauseSettings(**request.pause_seconds()))
    samples, report = normalize_for_acx(joined.samples, rate, target_lufs=request.loudness_lufs)
    master = encode_audio(samples, rate, "flac")
    engine.storage.put_bytes(book_chapter_master_key(book_id, chapter), master, content_type="audio/flac")
    data = master if request.format == "flac" else encode_chapter(samples, rate, request.format)
    key = book_chapter_key(book_id, chapter, request.format)
    engine.storage.put_bytes(key, data, content_type=OUTPUT_FORMATS[request.format].content_type)
    file = {
        "key": key,
        "master_key": book_chapter_master_key(book_id, chapter),
        "format": request.format,
        "samples": int(samples.size),
        "sample_rate": rate,
        "duration_s": round(samples.size / rate, 3),
        "bytes": len(data),
        "loudness": {
            "rms_dbfs": report.rms_dbfs,
            "peak_dbfs": report.peak_dbfs,
            "lufs": report.lufs,
            "gain_db": report.gain_db,
        },
    }
    books.chapter_assembled(book_id, chapter, file)
    queue_ready_work(books, send, book_id)
    return {"book_id": book_id, "chapter": chapter, "status": "assembled", "duration_s": file["duration_s"]}


def assemble_book(engine: Engine, book_id: str) -> dict[str, Any]:
    """Write the M4B from the chapter masters and finish the book; a finished book is left alone."""
    books = engine.books
    record = books.get(book_id)
    if record is None or record.status is not JobState.RUNNING:
        return {"book_id": book_id, "status": "skipped"}
    if not record.chapters or any(c.file is None for c in record.chapters):
        return {"book_id": book_id, "status": "not ready"}
    request = BookRequest.from_dict(record.request)
    cover = None
    if record.info.get("cover_media_type"):
        try:
            cover = engine.storage.get_bytes(book_cover_key(book_id))
        except ObjectNotFound:
            cover = None
    with tempfile.TemporaryDirectory(prefix="echo-book-") as tmp:
        chapters, rate = [], 0
        for chapter in record.chapters:
            assert chapter.file is not None
            samples, rate = _decode(engine.storage.get_bytes(str(chapter.file["master_key"])))
            spill = Path(tmp) / f"{chapter.index:03d}.f32"  # one chapter in memory at a time, the rest mapped
            samples.tofile(spill)
            chapters.append(ChapterAudio(chapter.title, np.memmap(spill, dtype=np.float32, mode="r")))
        path = Path(tmp) / "book.m4b"
        info = write_m4b(
            path,
            chapters,
            rate,
            title=request.title or record.title,
            author=request.author or record.author,
            cover=cover,
        )
        size = path.stat().st_size
        with path.open("rb") as handle:
            engine.storage.put_file(
                book_m4b_key(book_id), handle, content_type=M4B_CONTENT_TYPE, filename=f"{book_id}.m4b"
            )
    marks = [
        {"index": c.index, "title": m.title, "start_s": round(m.start_sample / rate, 3)}
        for c, m in zip(record.chapters, info.chapters, strict=True)
    ]
    result = {
        "key": book_m4b_key(book_id),
        "duration_s": round(info.duration_s, 3),
        "bytes": size,
        "chapters": marks,
        "cover": info.cover_attached,
    }
    books.succeed(book_id, result)
    log.info("book %s assembled: %.1f s of audio in %d chapters, %d bytes", book_id, info.duration_s, len(marks), size)
    return {"book_id": book_id, "status": "succeeded", **result}
