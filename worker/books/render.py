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
from jobs.render_stats import RenderStats

from ..engine import Engine
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
            results = engine.pipeline.synthesize_batch(
                [s.text for s, _ in todo],
                [speaker] * len(todo),
                sampler_config(request),
                [s.seed for s, _ in todo],
                should_cancel=_stop_check(engine, book_id),
            )
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
