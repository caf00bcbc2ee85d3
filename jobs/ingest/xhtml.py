"""Text out of EPUB content documents (XHTML, or HTML in old EPUB 2 books) and links out of an
EPUB 3 navigation document, with the standard library's HTML parser.

The parser is tolerant (old EPUBs are not always well-formed), never fetches anything and knows
only HTML's own named entities; a document that declares its own entities (``<!ENTITY``) is refused
by the caller before it gets here. Scripts, styles, the head, SVG, MathML, ruby annotations,
``<nav>`` blocks, page-break markers and note-reference numbers are dropped; block elements are
paragraph boundaries, and so are two or more ``<br>`` in a row (books converted from other formats
often separate paragraphs that way), while a single ``<br>`` is a line break inside a paragraph.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from jobs.ingest.textfile import clean_paragraph

BLOCKS = frozenset(
    "address article aside blockquote body caption center dd details dialog div dl dt fieldset figcaption figure "
    "footer form h1 h2 h3 h4 h5 h6 header hgroup hr html legend li main ol p pre section summary table tbody td "
    "tfoot th thead tr ul".split()
)
DROPPED = frozenset("head script style template svg math rt rp noscript nav object iframe audio video select".split())
VOID = frozenset("area base br col embed hr img image input link meta param source track wbr".split())
IMAGES = frozenset("img image svg picture".split())
HEADINGS = frozenset("h1 h2 h3 h4 h5 h6".split())
# epub:type / role values whose text is not read: printed page numbers and note-reference marks
DROPPED_TYPES = frozenset("pagebreak doc-pagebreak noteref doc-noteref".split())
# A page is a list of links (an HTML table of contents, an index) when at least this many of its
# paragraphs, and this share of them, are nothing but link text.
LINK_LIST_MIN_PARAGRAPHS = 3
LINK_LIST_SHARE = 0.8
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_XML_ENCODING = re.compile(rb"""^<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


@dataclass
class Document:
    """The text of one content document: paragraphs, where its ids point (id -> index of the first
    paragraph at or after the element), its first heading and ``<title>``, and whether it has images."""

    paragraphs: list[str] = field(default_factory=list)
    anchors: dict[str, int] = field(default_factory=dict)
    heading: str | None = None
    title: str | None = None
    has_images: bool = False
    link_only: list[bool] = field(default_factory=list)

    @property
    def is_link_list(self) -> bool:
        """True for a page that is a list of links (a table of contents in the text, an index)."""
        links = sum(self.link_only)
        return links >= LINK_LIST_MIN_PARAGRAPHS and links >= LINK_LIST_SHARE * len(self.paragraphs)


def decode_markup(raw: bytes) -> str:
    """Decode a content document: a byte-order mark, else the XML declaration's encoding, else UTF-8;
    undecodable bytes become U+FFFD instead of failing."""
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            return raw.decode(codec, errors="replace")
    declared = _XML_ENCODING.match(raw[:200])
    codec = declared.group(1).decode("ascii") if declared else "utf-8"
    try:
        return raw.decode(codec, errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


def declares_entities(markup: str) -> bool:
    """True when the document declares XML entities (the way into XXE and "billion laughs")."""
    return "<!ENTITY" in markup


def extract(markup: str) -> Document:
    """The text of a content document (see the module docstring)."""
    parser = _TextParser()
    parser.feed(markup)
    parser.close()
    parser.flush()
    return parser.doc


def _types(attrs: dict[str, str | None]) -> set[str]:
    return set(f"{attrs.get('epub:type') or ''} {attrs.get('role') or ''}".split())


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.doc = Document()
        self._buffer: list[str] = []
        self._link_chars = self._other_chars = 0
        self._breaks = 0  # <br> since the last text
        self._skip: list[str] = []  # the dropped element being skipped and its open descendants
        self._links = 0  # open <a href> elements
        self._heading: list[str] | None = None
        self._title: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.rsplit(":", 1)[-1]
        named = dict(attrs)
        if tag in BLOCKS:
            self.flush()
        anchor = named.get("id") or (named.get("name") if tag == "a" else None)
        if anchor:
            self.doc.anchors.setdefault(anchor, len(self.doc.paragraphs))
        self.doc.has_images |= tag in IMAGES
        if tag == "title" and self.doc.title is None:  # the head's <title>, not an SVG's
            self._title = []
        if tag == "body" and self._skip[:1] == ["head"]:  # HTML may leave </head> out
            self._skip.clear()
        if self._skip or tag in DROPPED or _types(named) & DROPPED_TYPES:
            if tag not in VOID:
                self._skip.append(tag)
            return
        if tag == "a" and named.get("href"):
            self._links += 1
        if tag == "br":
            self._breaks += 1
        if tag in HEADINGS and self.doc.heading is None:
            self._heading = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag.rsplit(":", 1)[-1] not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        tag = tag.rsplit(":", 1)[-1]
        if tag == "title" and self._title is not None:
            self.doc.title = clean_paragraph("".join(self._title)) or None
            self._title = None
        if self._skip:
            if tag in self._skip:  # close it and whatever was left open inside it
                del self._skip[len(self._skip) - 1 - self._skip[::-1].index(tag) :]
            return
        if tag == "a" and self._links:
            self._links -= 1
        if tag in HEADINGS and self._heading is not None:
            self.doc.heading = clean_paragraph("".join(self._heading)) or None
            self._heading = None
        if tag in BLOCKS:
            self.flush()

    def handle_data(self, data: str) -> None:
        if self._title is not None:
            self._title.append(data)
        if self._skip:
            return
        if data.strip() and self._breaks:
            if self._breaks > 1:
                self.flush()
            else:
                self._buffer.append(" ")
            self._breaks = 0
        self._buffer.append(data)
        if self._heading is not None:
            self._heading.append(data)
        chars = len(data.strip())
        if self._links:
            self._link_chars += chars
        else:
            self._other_chars += chars

    def unknown_decl(self, data: str) -> None:
        if data.startswith("CDATA["):  # XHTML's CDATA sections are text
            self.handle_data(data[len("CDATA[") :])

    def flush(self) -> None:
        text = clean_paragraph("".join(self._buffer))
        if text:
            self.doc.paragraphs.append(text)
            self.doc.link_only.append(self._link_chars > 0 and self._other_chars == 0)
        self._buffer.clear()
        self._breaks = 0
        self._link_chars = self._other_chars = 0


def toc_links(markup: str) -> list[tuple[str, str]]:
    """(label, href) of every link in the navigation document's table of contents, all levels,
    in document order: the ``<nav epub:type="toc">`` (or ``role="doc-toc"``), else the first ``<nav>``."""
    parser = _NavParser()
    parser.feed(markup)
    parser.close()
    if not parser.navs:
        return []
    tocs = [links for kinds, links in parser.navs if kinds & {"toc", "doc-toc"}]
    return tocs[0] if tocs else parser.navs[0][1]


class _NavParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.navs: list[tuple[set[str], list[tuple[str, str]]]] = []
        self._depth = 0  # open <nav> elements
        self._href: str | None = None
        self._label: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.rsplit(":", 1)[-1]
        named = dict(attrs)
        if tag == "nav":
            if self._depth == 0:
                self.navs.append((_types(named), []))
            self._depth += 1
        elif tag == "a" and self._depth and named.get("href"):
            self._href, self._label = named["href"], []

    def handle_endtag(self, tag: str) -> None:
        tag = tag.rsplit(":", 1)[-1]
        if tag == "nav" and self._depth:
            self._depth -= 1
        elif tag == "a" and self._href is not None:
            self.navs[-1][1].append((clean_paragraph("".join(self._label)), self._href))
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._label.append(data)
