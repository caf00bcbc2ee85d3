"""Helpers shared by the text and Markdown readers: decoding bytes, cleaning paragraphs, and
turning headed sections into chapters."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

from jobs.ingest.book import Chapter
from jobs.ingest.errors import BookRejected
from jobs.ingest.limits import IngestLimits

# Byte-order marks, longest first (a UTF-32-LE BOM starts with the UTF-16-LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# A file with more NUL bytes than this share of its first 8 KiB is binary (or UTF-16 without a BOM).
_SNIFF_BYTES = 8192
_MAX_NUL_SHARE = 0.01
_WHITESPACE = re.compile(r"\s+")
# Control characters (Cc, less the whitespace ones) and the invisible format characters (Cf) of books.
INVISIBLE = re.compile(
    "[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\xad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]"
)


def decode_text(data: bytes, limits: IngestLimits) -> str:
    """Decode a text file. The rule: a byte-order mark (UTF-8, UTF-16, UTF-32) wins; else UTF-8 if all
    bytes are valid UTF-8; else Windows-1252 if every byte is defined there; else Latin-1, which
    decodes any byte. Never raises on bad bytes; refuses binary data and files over the size limit.
    Line ends come back as ``\\n``.
    """
    if len(data) > limits.max_uncompressed_bytes:
        raise BookRejected(
            f"the file is {len(data):,} bytes, over the limit max_uncompressed_bytes={limits.max_uncompressed_bytes:,}"
        )
    text = _decode(data)
    head = data[:_SNIFF_BYTES]
    if not any(data.startswith(bom) for bom, _ in _BOMS) and head.count(0) > _MAX_NUL_SHARE * len(head):
        raise BookRejected(
            f"not a text file: {head.count(0)} NUL bytes in the first {len(head):,} bytes "
            "(binary data, or UTF-16 without a byte-order mark)"
        )
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode(data: bytes) -> str:
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    for codec in ("utf-8", "cp1252"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def clean_paragraph(text: str) -> str:
    """Collapse whitespace (any kind, line breaks included) to single spaces and drop control and
    invisible format characters (soft hyphens, zero-width spaces, bidi marks, stray NULs)."""
    return _WHITESPACE.sub(" ", INVISIBLE.sub("", text)).strip()


def blocks(text: str) -> list[list[str]]:
    """The text's blocks (runs of non-blank lines separated by blank lines), each a list of its lines."""
    found: list[list[str]] = []
    current: list[str] = []
    for line in text.split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            found.append(current)
            current = []
    if current:
        found.append(current)
    return found


def paragraphs_of(text: str) -> list[str]:
    """A chapter's text as paragraphs: blocks separated by blank lines, whitespace collapsed."""
    found = (clean_paragraph(" ".join(block)) for block in blocks(text.replace("\r\n", "\n")))
    return [p for p in found if p]


@dataclass
class Section:
    """A stretch of a text book under one heading; ``heading`` is the heading line as spoken (or None)."""

    title: str
    heading: str | None = None
    paragraphs: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        cleaned = clean_paragraph(text)
        if cleaned:
            self.paragraphs.append(cleaned)


def chapters_from_sections(sections: list[Section]) -> tuple[Chapter, ...]:
    """Chapters for the sections that have text besides their heading (a table of contents written
    as headings, or a part title right before a chapter, gives no empty chapters)."""
    chapters = []
    for section in sections:
        if not section.paragraphs:
            continue
        heading = [clean_paragraph(section.heading)] if section.heading and clean_paragraph(section.heading) else []
        chapters.append(Chapter(clean_paragraph(section.title) or "Untitled", tuple(heading + section.paragraphs)))
    return tuple(chapters)


def title_from_filename(filename: str) -> str:
    """A readable book title from an upload's file name: ``my_book-v2.txt`` -> ``my book-v2``."""
    stem = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem.lstrip(".") else stem
    return clean_paragraph(stem.replace("_", " ")) or "Untitled"
