"""The book the ingest step produces: metadata, chapters of paragraphs, and an optional cover.

Paragraph boundaries are kept on purpose: the renderer pauses longer between paragraphs than
between sentences. A chapter's paragraphs are the book's own text (a heading in the text is its
first paragraph), whitespace-collapsed but not yet normalised for speech
(:func:`jobs.ingest.speech_text.normalize_for_speech` is a separate, later step).

``Book.to_dict()`` is JSON-safe and leaves the cover *bytes* out (only its media type and size
go in): the dict travels through Redis and task messages, the cover is stored as its own object.
``Book.from_dict(d, cover=...)`` takes the cover back as an argument.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jobs.ingest.errors import InvalidChapterSelection

SOURCE_FORMATS = ("epub", "markdown", "text")


@dataclass(frozen=True)
class Cover:
    """A cover image as stored in the book: its media type (``image/jpeg``...) and bytes."""

    media_type: str
    data: bytes


@dataclass(frozen=True)
class Chapter:
    """One chapter: a title (for the chapter marker) and its paragraphs, in reading order."""

    title: str
    paragraphs: tuple[str, ...]

    @property
    def characters(self) -> int:
        """Characters of text in the chapter's paragraphs."""
        return sum(len(p) for p in self.paragraphs)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "paragraphs": list(self.paragraphs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Chapter:
        return cls(title=str(data["title"]), paragraphs=tuple(str(p) for p in data["paragraphs"]))


@dataclass(frozen=True)
class Book:
    """A readable book: ``source_format`` is one of :data:`SOURCE_FORMATS`; ``author`` is None when unknown."""

    title: str
    author: str | None
    chapters: tuple[Chapter, ...]
    cover: Cover | None = None
    source_format: str = "text"

    @property
    def characters(self) -> int:
        """Characters of text in all chapters."""
        return sum(c.characters for c in self.chapters)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; the cover is described (media type, size) but its bytes are left out."""
        cover = None if self.cover is None else {"media_type": self.cover.media_type, "size": len(self.cover.data)}
        return {
            "title": self.title,
            "author": self.author,
            "source_format": self.source_format,
            "cover": cover,
            "chapters": [c.to_dict() for c in self.chapters],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, cover: Cover | None = None) -> Book:
        """The inverse of :meth:`to_dict`; pass the cover (stored separately) back in as ``cover``."""
        author = data.get("author")
        return cls(
            title=str(data["title"]),
            author=None if author is None else str(author),
            chapters=tuple(Chapter.from_dict(c) for c in data["chapters"]),
            cover=cover,
            source_format=str(data.get("source_format", "text")),
        )

    def select(self, indices: Iterable[int]) -> Book:
        """The same book with only the chapters at ``indices`` (0-based), in book order, duplicates once.

        Raises :class:`InvalidChapterSelection` for an empty selection or an index the book does not have.
        """
        wanted = sorted(set(indices))
        count = len(self.chapters)
        if not wanted:
            raise InvalidChapterSelection("no chapters selected: give at least one chapter index")
        bad = [i for i in wanted if not 0 <= i < count]
        if bad:
            raise InvalidChapterSelection(
                f"chapter index {bad[0]} does not exist: the book has {count} chapters (indices 0 to {count - 1})"
            )
        return Book(self.title, self.author, tuple(self.chapters[i] for i in wanted), self.cover, self.source_format)
