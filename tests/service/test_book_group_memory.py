"""A book's segment group that runs out of memory: the group renders one segment at a time instead, so the
book goes on; only a segment that does not fit alone fails the book, with ``out_of_memory``.

Fault: the sampler call of the whole group raises what an exhausted allocator raises (torch's CPU
allocator's ``RuntimeError``, Python's ``MemoryError``); a call of one segment succeeds, or also fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from jobs.books import BookRequest, PlannedSegment, SegmentEnd
from jobs.errors import ErrorCode
from worker.books.render import BookOutOfMemory, _synthesize


class TightPipeline:
    """Fails every sampler call of more than ``fits`` items as an exhausted allocator would."""

    def __init__(self, fits: int, error: BaseException) -> None:
        self.fits, self.error, self.calls = fits, error, []  # type: ignore[var-annotated]

    def synthesize_batch(self, texts: Sequence[str], speakers: Any, config: Any, seeds: Any, **_: Any) -> list[Any]:
        self.calls.append(list(texts))
        if len(texts) > self.fits:
            raise self.error
        return [SimpleNamespace(text=text, seed=seed) for text, seed in zip(texts, seeds, strict=True)]


def _segments(count: int) -> list[PlannedSegment]:
    return [PlannedSegment(i, 0, f"Segment {i}.", 100 + i, SegmentEnd.SENTENCE) for i in range(count)]


@pytest.mark.parametrize(
    "error", [RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 1 PB"), MemoryError()]
)
def test_a_group_out_of_memory_renders_one_segment_at_a_time(error: BaseException) -> None:
    # Given a device on which a group of four does not fit, one segment does
    engine = SimpleNamespace(pipeline=TightPipeline(1, error))
    # When the group renders
    results = _synthesize(engine, "book_1", BookRequest(book_id="book_1", seed=1), _segments(4), None)  # type: ignore[arg-type]
    # Then the group was tried once, then each segment alone, in order, with its own seed
    assert engine.pipeline.calls[0] == [f"Segment {i}." for i in range(4)]
    assert engine.pipeline.calls[1:] == [[f"Segment {i}."] for i in range(4)]
    assert [(r.text, r.seed) for r in results] == [(f"Segment {i}.", 100 + i) for i in range(4)]


def test_a_segment_that_does_not_fit_alone_fails_the_book_with_out_of_memory() -> None:
    # Given a device on which nothing fits
    engine = SimpleNamespace(pipeline=TightPipeline(0, MemoryError()))
    # When the group renders, Then the book's error is out_of_memory, naming what to lower
    with pytest.raises(BookOutOfMemory) as raised:
        _synthesize(engine, "book_1", BookRequest(book_id="book_1", seed=1), _segments(2), None)  # type: ignore[arg-type]
    assert raised.value.code is ErrorCode.OUT_OF_MEMORY and "ECHO_MAX_PIECE_BYTES" in raised.value.message


def test_an_error_that_is_not_memory_is_not_retried() -> None:
    # Given a model error (a shape mismatch), When the group renders, Then it propagates (render_failed)
    engine = SimpleNamespace(pipeline=TightPipeline(0, RuntimeError("mat1 and mat2 shapes cannot be multiplied")))
    with pytest.raises(RuntimeError, match="shapes"):
        _synthesize(engine, "book_1", BookRequest(book_id="book_1", seed=1), _segments(2), None)  # type: ignore[arg-type]
    assert len(engine.pipeline.calls) == 1
