"""Markdown books: chapters at ``#`` and ``##`` headings, Markdown syntax stripped for speech.

- Chapters start at level-1 and level-2 headings (ATX ``#`` or setext underlines). If the file has
  exactly one ``#`` heading and it is the first heading, it is the book's title and the ``##``
  headings are the chapters. Deeper headings stay in the text as paragraphs.
- Paragraphs at blank lines; each list item, table row and heading is a paragraph of its own.
- Emphasis, strikethrough and inline code keep their text; links keep their text (not the URL);
  images are dropped; raw HTML tags and comments are dropped (their text is kept).
- Fenced code blocks are dropped: program listings are not read aloud. Indented blocks are kept
  as text, since in prose they are more often a quotation or a poem than code.
- A YAML front matter block is dropped; its ``title:`` and ``author:`` are used.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass

from jobs.errors import ErrorCode
from jobs.ingest.book import Book
from jobs.ingest.errors import BookRejected
from jobs.ingest.limits import IngestLimits
from jobs.ingest.textfile import Section, chapters_from_sections, clean_paragraph, decode_text

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(?P<body>.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FRONT_FIELD = re.compile(r"^(?P<key>title|author)\s*:\s*(?P<value>.+?)\s*$", re.M | re.I)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(?P<hashes>#{1,6})(?:[ \t]+(?P<text>.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(?P<line>=+|-+)[ \t]*$")
_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+(?:\[[ xX]\][ \t]+)?")
_QUOTE = re.compile(r"^[ \t]{0,3}(?:>[ \t]?)+")
_TABLE_ROW = re.compile(r"^[ \t]*\|.*\|[ \t]*$")
_TABLE_RULE = re.compile(r"^[ \t]*\|?(?:[ \t]*:?-+:?[ \t]*\|)+(?:[ \t]*:?-+:?[ \t]*)?[ \t]*$")
_LINK_DEFINITION = re.compile(r"^ {0,3}\[(?!\^)[^\]]+\]:[ \t]*\S+.*$")
_FOOTNOTE_DEFINITION = re.compile(r"^ {0,3}\[\^[^\]]+\]:[ \t]*")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!>|~<])")
_INLINE = (
    (re.compile(r"!\[[^\]]*\](?:\([^)]*\)|\[[^\]]*\])"), ""),  # images
    (re.compile(r"\[\^[^\]]+\]"), ""),  # footnote references
    (re.compile(r"\[([^\]]+)\](?:\([^)]*\)|\[[^\]]*\])"), r"\1"),  # links keep their text
    (re.compile(r"<((?:https?|ftp|mailto):[^>\s]+|[^@>\s]+@[^>\s]+)>"), r"\1"),  # autolinks
    (re.compile(r"<br\s*/?>", re.I), " "),
    (re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>"), ""),  # raw HTML tags
    (re.compile(r"(`+)(.+?)\1"), r"\2"),  # inline code keeps its text
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # strong
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),  # emphasis
    (re.compile(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])"), r"\1"),  # emphasis, not snake_case
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"), r"\1"),  # strikethrough keeps its text
)
_PRIVATE_USE = 0xE000  # escaped characters hide here while the inline rules run


@dataclass(frozen=True)
class _Heading:
    level: int
    text: str


def read_markdown(data: bytes, title: str, limits: IngestLimits) -> Book:
    """Read a Markdown book; ``title`` is used when neither front matter nor a lone ``#`` names one."""
    text = decode_text(data, limits)
    text, fields = _front_matter(text)
    items = list(_items(_COMMENT.sub("", text)))
    headings = [item for item in items if isinstance(item, _Heading) and item.level <= 2]
    top = [h for h in headings if h.level == 1]
    title_heading = top[0] if len(top) == 1 and headings[0] is top[0] else None
    title = fields.get("title") or (title_heading.text if title_heading else None) or title
    sections = [Section(title)]
    for item in items:
        if item is title_heading:
            sections[-1].heading = item.text
        elif isinstance(item, _Heading) and item.level <= 2:
            sections.append(Section(item.text, heading=item.text))
        else:
            sections[-1].add(item.text if isinstance(item, _Heading) else item)
    chapters = chapters_from_sections(sections)
    if not chapters:
        raise BookRejected(
            "the book has no text to speak: the Markdown holds only headings, images, code or whitespace",
            code=ErrorCode.BOOK_HAS_NO_TEXT,
        )
    return Book(title=title, author=fields.get("author"), chapters=chapters, source_format="markdown")


def _front_matter(text: str) -> tuple[str, dict[str, str]]:
    match = _FRONT_MATTER.match(text.lstrip("\ufeff"))
    if match is None:
        return text, {}
    fields = {m["key"].lower(): m["value"].strip("\"'") for m in _FRONT_FIELD.finditer(match["body"])}
    return text.lstrip("\ufeff")[match.end() :], fields


def _items(text: str) -> Iterator[_Heading | str]:
    """Headings and paragraphs (inline syntax stripped), in order."""
    block: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        if fence is not None:  # inside a fenced code block: dropped
            if line.strip().startswith(fence):
                fence = None
            continue
        opening = _FENCE.match(line)
        setext = _SETEXT.match(line)
        if opening or not _QUOTE.sub("", line).strip() or _BREAK.match(line) and not (setext and block):
            yield from _flush(block)
            fence = opening["fence"] if opening else None
        elif setext and block:
            yield _Heading(1 if setext["line"][0] == "=" else 2, inline(" ".join(block)))
            block = []
        elif atx := _ATX.match(line):
            yield from _flush(block)
            yield _Heading(len(atx["hashes"]), inline(atx["text"] or ""))
        elif _LINK_DEFINITION.match(line) or _TABLE_RULE.match(line):
            continue
        elif _LIST_ITEM.match(line) or _TABLE_ROW.match(line) or _FOOTNOTE_DEFINITION.match(line):
            yield from _flush(block)
            block.append(_line_text(line))
        else:
            block.append(_line_text(line))
    yield from _flush(block)


def _flush(block: list[str]) -> Iterator[str]:
    if block:
        yield inline(" ".join(block))
        block.clear()


def _line_text(line: str) -> str:
    """A line without its block markers: list bullet, quote marks, footnote label, table pipes."""
    line = _QUOTE.sub("", line)
    line = _FOOTNOTE_DEFINITION.sub("", line)
    line = _LIST_ITEM.sub("", line)
    if _TABLE_ROW.match(line):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        line = ", ".join(cell for cell in cells if cell)
    return line


def inline(text: str) -> str:
    """Markdown inline syntax stripped for speech (see the module docstring); HTML entities decoded."""
    text = _ESCAPE.sub(lambda m: chr(_PRIVATE_USE + ord(m[1])), text)
    for pattern, replacement in _INLINE:
        text = pattern.sub(replacement, text)
    text = re.sub("[\ue000-\ue07f]", lambda m: chr(ord(m[0]) - _PRIVATE_USE), text)
    return clean_paragraph(html.unescape(text))
