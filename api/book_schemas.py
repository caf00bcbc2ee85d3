"""Pydantic models of /v1/audiobooks: the options of a book, its JSON form, and its public view.

Bounds come from :mod:`jobs.books` (pauses, loudness, formats); the sampler options are the jobs'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import BaseModel, Field, StrictInt, field_validator

from api.schemas import ErrorBody, Overrides, Preset, Status, _Strict
from api.webhook_schemas import Event, WebhookState, events_field, webhook_field
from jobs import books, contract

if TYPE_CHECKING:
    BookFormat: TypeAlias = str
else:
    BookFormat = Literal[books.BOOK_FORMATS]


def _pause(name: str, what: str) -> Any:
    low, high = books.PAUSE_BOUNDS_S[name]
    return Field(
        None,
        strict=True,  # false is not 0.0; 1 is still 1.0
        ge=low,
        le=high,
        description=f"Seconds of silence {what} (default {books.DEFAULT_PAUSES_S[name]:g}; {low:g}..{high:g})",
    )


class BookOptions(_Strict):
    """How to render a book: the same fields as multipart form fields (next to ``file``) or JSON."""

    voice: str | None = Field(None, max_length=128, description="A stored voice id or name (GET /v1/voices)")
    preset: Preset = Field(contract.DEFAULT_PRESET, description="An upstream sampler preset")
    overrides: Overrides = Field(default_factory=Overrides, description="Bounded sampler overrides")
    seed: int | None = Field(
        None,
        strict=True,  # true is not 1
        ge=0,
        lt=2**63,
        description="The book's seed; each segment's seed comes from it and the segment's own text. Random when absent",
    )
    format: BookFormat = Field(
        books.DEFAULT_BOOK_FORMAT, description="Format of the chapter files (the whole book is always an M4B)"
    )
    pause_sentence_s: float | None = _pause("sentence_s", "between sentences")
    pause_paragraph_s: float | None = _pause("paragraph_s", "between paragraphs")
    pause_chapter_s: float | None = _pause("chapter_s", "at the end of each chapter")
    loudness_lufs: float | None = Field(
        None,
        strict=True,
        ge=books.LOUDNESS_LUFS_BOUNDS[0],
        le=books.LOUDNESS_LUFS_BOUNDS[1],
        description="Integrated loudness target per chapter; absent: ACX (RMS -23..-18 dBFS, peak <= -3 dBFS)",
    )
    title: str | None = Field(None, max_length=512, description="Overrides the book's own title")
    author: str | None = Field(None, max_length=512, description="Overrides the book's own author")
    select_chapters: list[StrictInt] | None = Field(  # strict: [false] is not [0]
        None,
        min_length=1,
        description="Render only these chapters (0-based indices of the parsed book); "
        "multipart also takes them as `chapters`, e.g. 0,2,5",
    )
    webhook: str | None = webhook_field()
    webhook_events: list[Event] | None = events_field()

    @field_validator("select_chapters")
    @classmethod
    def _indices(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(i < 0 for i in value):
            raise ValueError("chapter indices start at 0")
        return value

    def pauses(self) -> dict[str, float]:
        given = {
            "sentence_s": self.pause_sentence_s,
            "paragraph_s": self.pause_paragraph_s,
            "chapter_s": self.pause_chapter_s,
        }
        return {k: v for k, v in given.items() if v is not None}


class ChapterText(_Strict):
    title: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1, description="Paragraphs separated by blank lines")


class BookCreate(BookOptions):
    """POST /v1/audiobooks as JSON: the book's chapters given as text, with the options."""

    title: str | None = Field(None, max_length=512, description="The book's title")
    author: str | None = Field(None, max_length=512)
    chapters: list[ChapterText] = Field(min_length=1, description="The chapters, in order")


class BookChapter(BaseModel):
    index: int
    title: str
    status: Literal["waiting", "rendering", "assembling", "assembled"]
    segments_total: int
    segments_done: int
    duration_s: float | None
    url: str | None = Field(description="The chapter file (fresh presigned URL) once assembled")


class BookResult(BaseModel):
    m4b_url: str = Field(description="Fresh presigned URL of the whole book (or this API's URL with local storage)")
    duration_s: float
    bytes: int
    chapters: list[dict[str, Any]] = Field(description="Chapter markers: index, title, start_s")


class Book(BaseModel):
    id: str
    status: Status
    title: str
    author: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: float = Field(description="Segments done over segments planned (0 until planned)")
    eta_s: float | None = Field(description="Seconds left at this book's pace so far")
    segments_total: int
    segments_done: int
    segments_rendered: int = Field(description="Segments this book rendered")
    segments_cached: int = Field(description="Segments found in the segment cache (rendered before)")
    audio_s: float = Field(description="Seconds of audio in the chapters assembled so far")
    chapters: list[BookChapter]
    result: BookResult | None
    error: ErrorBody | None
    request: dict[str, Any]
    webhook: WebhookState | None = Field(None, description="The book's webhook and its deliveries; null: none")
    links: dict[str, str]


class BookList(BaseModel):
    books: list[Book]
    next_before: float | None = Field(description="Pass as ?before= for older books; null on the last page")
