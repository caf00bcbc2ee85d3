"""Joining a chapter's rendered segments with pauses, and where each segment starts.

Chapter timings come from sample counts, never from timestamps: :func:`join_chapter` returns
the sample offset of every segment, so chapter and segment starts are exact at any length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from echo_tts.errors import InvalidAudio, InvalidInput
from jobs.books import DEFAULT_PAUSES_S, PAUSE_BOUNDS_S, SegmentEnd

__all__ = ["JoinedChapter", "PauseSettings", "Segment", "SegmentEnd", "join_chapter"]


@dataclass(frozen=True)
class PauseSettings:
    """Silence lengths in seconds: after a clause, a sentence, a paragraph, and a chapter.

    ``chapter_s`` is the silence appended after a chapter's last segment (2 s by default,
    inside ACX's 1-5 s of room tone at the end of a file). Out-of-range values raise
    :class:`InvalidInput` naming the field and its range (:data:`PAUSE_BOUNDS_S`).
    """

    sentence_s: float = DEFAULT_PAUSES_S["sentence_s"]
    paragraph_s: float = DEFAULT_PAUSES_S["paragraph_s"]
    chapter_s: float = DEFAULT_PAUSES_S["chapter_s"]
    clause_s: float = DEFAULT_PAUSES_S["clause_s"]

    def __post_init__(self) -> None:
        for name, (low, high) in PAUSE_BOUNDS_S.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise InvalidInput(f"pause {name} must be a number within {low:g}-{high:g} s, got {value!r}")

    def after(self, end: SegmentEnd) -> float:
        """Seconds of silence after a segment that ends a clause, sentence or paragraph."""
        return {
            SegmentEnd.CLAUSE: self.clause_s,
            SegmentEnd.SENTENCE: self.sentence_s,
            SegmentEnd.PARAGRAPH: self.paragraph_s,
        }[SegmentEnd(end)]


@dataclass(frozen=True)
class Segment:
    """One rendered segment: mono float samples (N,) and where it ends in the text."""

    samples: np.ndarray
    end: SegmentEnd = SegmentEnd.SENTENCE


@dataclass(frozen=True)
class JoinedChapter:
    """A chapter's samples (float32, (N,)) and the sample offset where each segment starts.

    ``offsets[i]`` is the first sample of segment ``i``; an empty segment gets the offset where
    it would have started (the end of the audio before it), so offsets never decrease.
    """

    samples: np.ndarray
    offsets: tuple[int, ...]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


def _mono(samples: np.ndarray, index: int) -> np.ndarray:
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim != 1:
        raise InvalidAudio(f"segment {index}: expected mono samples of shape (N,), got shape {tuple(array.shape)}")
    return array


def _layout(pieces: Sequence[np.ndarray], ends: Sequence[SegmentEnd], gaps: dict[SegmentEnd, int]) -> list[int]:
    """Offsets of each piece; an empty piece adds no audio, and the pause before the next piece
    is the longest one pending (an empty paragraph end still gives a paragraph pause)."""
    offsets: list[int] = []
    position, pending = 0, 0
    for piece, end in zip(pieces, ends, strict=True):
        if piece.size == 0:
            offsets.append(position)
            if position:
                pending = max(pending, gaps[end])
            continue
        position += pending if position else 0
        offsets.append(position)
        position += piece.size
        pending = gaps[end]
    return offsets


def join_chapter(
    segments: Sequence[Segment],
    sample_rate: int,
    *,
    pauses: PauseSettings | None = None,
) -> JoinedChapter:
    """Join a chapter's segments, in order, with silence after each one by how it ends.

    No silence goes before the first segment; after the last one comes ``pauses.chapter_s``
    instead of its own pause. Empty segments (trimmed to nothing) add neither audio nor a gap
    of their own. The result holds ``sum(len) + sum(pauses)`` samples, each pause rounded to
    whole samples, and is built in one preallocated array (no second copy of the chapter).
    """
    if sample_rate <= 0:
        raise InvalidInput(f"sample_rate must be positive, got {sample_rate}")
    settings = pauses if pauses is not None else PauseSettings()
    pieces = [_mono(segment.samples, i) for i, segment in enumerate(segments)]
    ends = [SegmentEnd(segment.end) for segment in segments]
    gaps = {end: int(round(settings.after(end) * sample_rate)) for end in SegmentEnd}
    offsets = _layout(pieces, ends, gaps)
    audio_end = max((o + p.size for o, p in zip(offsets, pieces, strict=True) if p.size), default=0)
    tail = int(round(settings.chapter_s * sample_rate)) if audio_end else 0
    out = np.zeros(audio_end + tail, dtype=np.float32)
    for offset, piece in zip(offsets, pieces, strict=True):
        out[offset : offset + piece.size] = piece
    return JoinedChapter(samples=out, offsets=tuple(offsets), sample_rate=int(sample_rate))
