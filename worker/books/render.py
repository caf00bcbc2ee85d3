"""Render one group of a book's segments (GPU): what the cache holds is counted, the rest is rendered
as one batched sampler call, stored in the cache (``cache/segments/{digest}.flac``) and counted.

A worker killed mid-group loses at most that group's unfinished batch: the group's message is
re-delivered (acks late), segments already counted stay counted, and segments stored but not yet
counted are found in the cache.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from echo_tts.audio import encode_audio
from echo_tts.errors import Cancelled
from jobs.books import BookRequest, PlannedSegment
from jobs.contract import segment_cache_key
from jobs.errors import ErrorCode, ServiceError
from jobs.render_stats import RenderStats

from ..engine import Engine
from ..job_output import free_after_out_of_memory, is_out_of_memory
from ..voices import voice_latents
from .flow import Send, queue_ready_work
from .segments import digest_of, load_plan, sampler_config, settings_of, voice_identity

log = logging.getLogger(__name__)
CANCEL_POLL_S = 0.5  # how often a render looks at the book's state between diffusion steps


def _stop_check(engine: Engine, book_id: str) -> Any:
    last = [0.0]

    def stopped() -> bool:
        now = time.monotonic()
        if now - last[0] < CANCEL_POLL_S:
            return False
        last[0] = now
        return engine.books.is_stopped(book_id)

    return stopped


def render_group(engine: Engine, send: Send, book_id: str, indices: list[int]) -> dict[str, Any]:
    """Render the segments ``indices`` of ``book_id`` that are neither counted nor cached."""
    books = engine.books
    record = books.get(book_id)
    if record is None or books.is_stopped(book_id):
        return {"book_id": book_id, "status": "skipped"}
    request = BookRequest.from_dict(record.request)
    plan = load_plan(engine.storage, book_id)
    done = books.segments_done(book_id)
    voice, settings = voice_identity(engine.voices, request), settings_of(request)
    todo: list[tuple[PlannedSegment, str]] = []
    cached = 0
    for index in indices:
        segment = plan[index]
        if index in done:
            continue
        digest = digest_of(segment, model_revision=engine.model_revision, voice=voice, settings=settings)
        if engine.storage.exists(segment_cache_key(digest)):
            books.segment_done(book_id, index, segment.chapter, digest, cached=True)
            cached += 1
        else:
            todo.append((segment, digest))
    stats = RenderStats(engine.jobs.r, prefix=engine.jobs.prefix)
    stats.segment_cache_lookups(hits=cached, misses=len(todo))
    if todo:
        speaker = voice_latents(engine, request.voice_id, request.owner) if request.voice_id else None
        started = time.monotonic()
        engine.busy_job = book_id
        try:
            results = _synthesize(engine, book_id, request, [s for s, _ in todo], speaker)
        except Cancelled:
            return {"book_id": book_id, "status": "stopped"}
        finally:
            engine.busy_job = None
        share = (time.monotonic() - started) / len(todo)
        for (segment, digest), result in zip(todo, results, strict=True):
            flac = encode_audio(result.samples, result.sample_rate, "flac")
            engine.storage.put_bytes(segment_cache_key(digest), flac, content_type="audio/flac")
            books.segment_done(book_id, segment.index, segment.chapter, digest, cached=False, render_s=share)
        stats.book_segments_rendered(len(todo))
    queue_ready_work(books, send, book_id, {plan[i].chapter for i in indices})
    return {"book_id": book_id, "status": "done", "rendered": len(todo), "cached": cached}


class BookOutOfMemory(ServiceError):
    """One segment alone does not fit the device's memory: the book fails with ``out_of_memory``."""

    code = ErrorCode.OUT_OF_MEMORY


def _synthesize(
    engine: Engine, book_id: str, request: BookRequest, segments: list[PlannedSegment], speaker: Any
) -> list[Any]:
    """The group as one sampler call; a group that runs out of memory renders one segment at a time (the
    memory the failed call held freed first), so only a segment too big alone fails the book."""

    def call(items: list[PlannedSegment]) -> list[Any]:
        return list(
            engine.pipeline.synthesize_batch(
                [s.text for s in items],
                [speaker] * len(items),
                sampler_config(request),
                [s.seed for s in items],
                should_cancel=_stop_check(engine, book_id),
            )
        )

    groups = [segments]
    while True:
        try:
            return [result for group in groups for result in call(group)]
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            detail = free_after_out_of_memory(exc)
            if len(groups) == len(segments):
                raise BookOutOfMemory(
                    f"out of memory rendering one segment alone ({detail}); a smaller ECHO_MAX_PIECE_BYTES on "
                    "the worker makes shorter segments"
                ) from None
            log.warning("book %s: a group of %d ran out of memory (%s); one at a time", book_id, len(segments), detail)
            groups = [[segment] for segment in segments]
