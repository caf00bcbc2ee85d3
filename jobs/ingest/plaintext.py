"""Plain-text books: chapters at "Chapter 1" / "CHAPTER IV" / "Chapter One: Title" style headings
(else one chapter), paragraphs at blank lines.

A heading is the first line of a block (a run of non-blank lines) that reads "Chapter", "Part" or
"Book" plus a number (digits, Roman numerals, or English words up to ninety-nine), optionally
followed by a title after ``:``, ``.`` or a dash; or a line that is just "Prologue", "Epilogue",
"Preface", "Foreword", "Introduction" or "Afterword". If the block has no title after the number
and only one more short line, that line is the title ("CHAPTER I." / "Down the Rabbit-Hole"). A
block in which several lines are headings is a table of contents, read as text. Project Gutenberg's
licence header and footer are dropped and its "Title:" / "Author:" lines used.
"""

from __future__ import annotations

import re

from jobs.errors import ErrorCode
from jobs.ingest.book import Book
from jobs.ingest.errors import BookRejected
from jobs.ingest.limits import IngestLimits
from jobs.ingest.textfile import Section, blocks, chapters_from_sections, clean_paragraph, decode_text

_UNITS = "one|two|three|four|five|six|seven|eight|nine"
_WORD_NUMBER = (
    rf"(?:(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[- ](?:{_UNITS}))?"
    rf"|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|{_UNITS})"
)
_ROMAN = r"(?=[mdclxvi])m{0,4}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3})"
_HEADING = re.compile(
    rf"^\s*(?P<label>(?:chapter|chap\.|part|book)\s+(?:\d{{1,4}}|{_ROMAN}|{_WORD_NUMBER}))(?![\w'’])"
    r"(?:\s*[:.\-–—]\s*(?P<title>\S.*?)|\.)?\s*$",
    re.IGNORECASE,
)
_NAMED = re.compile(
    r"^\s*(?P<label>prologue|epilogue|preface|foreword|introduction|afterword)\.?(?:\s*[:.\-–—]\s*(?P<title>\S.*?))?\s*$",
    re.IGNORECASE,
)
_MAX_HEADING_CHARS = 100  # longer lines are prose that happens to start with "Chapter 3"
_MAX_TITLE_LINE_CHARS = 80  # a title on the line under "CHAPTER I."
_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK.*$", re.I | re.M)
_GUTENBERG_END = re.compile(r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK.*$", re.I | re.M)
_FIELD = re.compile(r"^(?P<key>Title|Author):\s*(?P<value>\S.*?)\s*$", re.M)


def read_text(data: bytes, title: str, limits: IngestLimits) -> Book:
    """Read a plain-text book; ``title`` is used when the text does not name one."""
    text = decode_text(data, limits)
    text, fields = _strip_gutenberg(text)
    title = fields.get("Title", title)
    sections: list[Section] = [Section(title)]
    for lines in blocks(text):
        heading = _heading(lines)
        if heading is None:
            sections[-1].add(" ".join(lines))
            continue
        heading_title, body = heading
        sections.append(Section(heading_title, heading=heading_title))
        if body:
            sections[-1].add(" ".join(body))
    chapters = chapters_from_sections(sections)
    if not chapters:
        raise BookRejected(
            "the book has no text to speak: the file holds only whitespace or headings", code=ErrorCode.BOOK_HAS_NO_TEXT
        )
    return Book(title=title, author=fields.get("Author"), chapters=chapters, source_format="text")


def _heading(lines: list[str]) -> tuple[str, list[str]] | None:
    """(title, remaining body lines) when the block starts with a chapter heading, else None."""
    match = _match_heading(lines[0])
    if match is None or sum(_match_heading(line) is not None for line in lines) > 1:
        return None
    label, title = clean_paragraph(match["label"]), clean_paragraph(match["title"] or "")
    body = lines[1:]
    if not title and len(body) == 1 and len(body[0].strip()) <= _MAX_TITLE_LINE_CHARS:
        title, body = clean_paragraph(body[0]), []
    return (f"{label}: {title}" if title else label), body


def _match_heading(line: str) -> re.Match[str] | None:
    if len(line.strip()) > _MAX_HEADING_CHARS:
        return None
    return _HEADING.match(line) or _NAMED.match(line)


def _strip_gutenberg(text: str) -> tuple[str, dict[str, str]]:
    """The text between Project Gutenberg's START and END lines (all of it if absent), and the
    header's Title/Author fields."""
    start = _GUTENBERG_START.search(text)
    if start is None:
        return text, {}
    fields: dict[str, str] = {}
    for match in _FIELD.finditer(text, 0, start.start()):
        fields.setdefault(match["key"], match["value"])
    end = _GUTENBERG_END.search(text, start.end())
    return text[start.end() : end.start() if end else len(text)], fields
