"""The audiobook contract: what a book request holds, how its segments are planned and grouped.

Torch-free, like all of :mod:`jobs`: the API validates a :class:`BookRequest` with it, the CPU
planner and the GPU workers read the same request and plan from storage.

A book is split into *segments*, one generation each. A segment's seed comes from the book's seed
and the segment's own text (never its index), and its cache key (``cache/segments/{digest}.flac``)
is a digest over the model revision, the voice, the sampler settings, that seed and the text:
editing one chapter re-renders only the segments whose text changed, and a book submitted again
renders nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from jobs.contract import (
    DEFAULT_PRESET,
    OUTPUT_FORMATS,
    PRESET_NAMES,
    ContractError,
    build_request,
    override_errors,
)

BOOK_FORMATS = tuple(f for f in OUTPUT_FORMATS if f != "pcm")  # chapter files need a container
DEFAULT_BOOK_FORMAT = "mp3"
SEED_SPACE = 2**63


class SegmentEnd(StrEnum):
    """Where a segment ends in the text, which sets the pause after it."""

    CLAUSE = "clause"  # a long sentence cut at a clause boundary: a short breath
    SENTENCE = "sentence"
    PARAGRAPH = "paragraph"


# (low, high) seconds allowed for each pause: long enough for any narration style, short enough
# that a typo (80 instead of 0.8) fails loudly.
PAUSE_BOUNDS_S: dict[str, tuple[float, float]] = {
    "clause_s": (0.0, 2.0),
    "sentence_s": (0.0, 3.0),
    "paragraph_s": (0.0, 5.0),
    "chapter_s": (0.0, 10.0),
}
DEFAULT_PAUSES_S = {"clause_s": 0.15, "sentence_s": 0.35, "paragraph_s": 0.8, "chapter_s": 2.0}
LOUDNESS_LUFS_BOUNDS = (-35.0, -10.0)  # integrated loudness targets a person would choose


def pause_errors(pauses: dict[str, Any]) -> list[str]:
    """Problems with a ``pauses`` mapping (unknown names, non-numbers, out of bounds), naming each field."""
    problems = [
        f"pauses.{name}: unknown pause (use {', '.join(PAUSE_BOUNDS_S)})"
        for name in pauses
        if name not in PAUSE_BOUNDS_S
    ]
    for name, value in pauses.items():
        if name not in PAUSE_BOUNDS_S:
            continue
        low, high = PAUSE_BOUNDS_S[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            problems.append(f"pauses.{name} must be a number of seconds between {low:g} and {high:g}, got {value!r}")
    return problems


@dataclass(frozen=True)
class BookRequest:
    """One audiobook as the workers receive it: the options, never the text (that is in storage).

    ``chapters`` selects chapter indices of the parsed book (None: all); ``loudness_lufs`` None means
    the ACX target (RMS -23..-18 dBFS, peak <= -3 dBFS), a number an integrated loudness target.
    """

    book_id: str
    seed: int
    owner: str | None = None
    voice_id: str | None = None
    preset: str = DEFAULT_PRESET
    overrides: dict[str, Any] = field(default_factory=dict)
    format: str = DEFAULT_BOOK_FORMAT
    pauses: dict[str, float] = field(default_factory=dict)
    loudness_lufs: float | None = None
    title: str | None = None
    author: str | None = None
    chapters: tuple[int, ...] | None = None

    def validate(self) -> None:
        """Raise ContractError naming every field that breaks the contract."""
        problems: list[str] = []
        if not self.book_id:
            problems.append("book_id must not be empty")
        if self.format not in BOOK_FORMATS:
            problems.append(f"format must be one of {', '.join(BOOK_FORMATS)}, got {self.format!r}")
        if self.preset not in PRESET_NAMES:
            problems.append(f"preset must be one of {', '.join(PRESET_NAMES)}, got {self.preset!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < SEED_SPACE:
            problems.append("seed must be an integer in [0, 2**63)")
        problems += override_errors(self.overrides)
        problems += pause_errors(self.pauses)
        if self.loudness_lufs is not None:
            low, high = LOUDNESS_LUFS_BOUNDS
            value = self.loudness_lufs
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                problems.append(f"loudness_lufs must be a number between {low:g} and {high:g} LUFS, got {value!r}")
        if self.chapters is not None and (
            not self.chapters or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in self.chapters)
        ):
            problems.append("chapters must be a non-empty list of chapter indices (0, 1, ...)")
        if problems:
            raise ContractError("; ".join(problems))

    def pause_seconds(self) -> dict[str, float]:
        """Every pause, the request's values over the defaults."""
        return {**DEFAULT_PAUSES_S, **{k: float(v) for k, v in self.pauses.items()}}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["chapters"] = list(self.chapters) if self.chapters is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BookRequest:
        """Build and validate; unknown fields raise ContractError naming them."""
        values = dict(data)
        if values.get("chapters") is not None:
            values["chapters"] = tuple(values["chapters"])
        return build_request(cls, values, "book request")


def segment_seed(book_seed: int, text: str) -> int:
    """The seed of a segment: from the book's seed and the segment's own text, not its position,
    so the same sentence renders the same wherever an edit moved it."""
    digest = hashlib.sha256(f"{book_seed}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_SPACE


@dataclass(frozen=True)
class PlannedSegment:
    """One generation of a book: its place (chapter, index in the book), text, seed and the pause after it."""

    index: int
    chapter: int  # position in the book's chapter list (the selection keeps the book's numbering)
    text: str
    seed: int
    end: SegmentEnd

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "chapter": self.chapter,
            "text": self.text,
            "seed": self.seed,
            "end": self.end.value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannedSegment:
        return cls(
            int(data["index"]), int(data["chapter"]), str(data["text"]), int(data["seed"]), SegmentEnd(data["end"])
        )


def group_segments(segments: Sequence[PlannedSegment], group_size: int) -> list[list[int]]:
    """Indices of ``segments`` in groups of at most ``group_size`` rendered as one batch: similar
    lengths together (a batch runs as long as its longest item), book order within a length."""
    if group_size < 1:
        raise ValueError("group_size must be >= 1")
    ordered = sorted(segments, key=lambda s: (len(s.text.encode()), s.index))
    return [[s.index for s in ordered[i : i + group_size]] for i in range(0, len(ordered), group_size)]
