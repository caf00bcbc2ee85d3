"""EPUB 2 and 3 books: chapters in spine order, titled from the table of contents.

- The table of contents is the EPUB 3 navigation document (``properties="nav"``), else the EPUB 2
  NCX. Each entry starts a chapter where it points: at the start of a file, or at the element with
  the entry's ``#fragment`` id (the chapter then starts at that element's paragraph), so one file
  may hold several chapters and one chapter may span several files. Nested entries count as
  chapters too. Entries that point at the same place are one chapter titled "Part One: Chapter 1".
- Text before the first entry (front matter with text) gets one chapter per file, titled from the
  file's first heading. A book without a usable table of contents gets one chapter per spine file.
- Files without text (cover, title page, image plates), the navigation document, pages that are
  only lists of links, and chapters that end up with no text are skipped. ``linear="no"`` spine
  items are read only when the table of contents points into them.
- Title and author come from the OPF's ``dc:title`` and ``dc:creator`` (authors, not editors or
  illustrators, when roles are given); the cover is the EPUB 3 ``cover-image`` item or the EPUB 2
  ``<meta name="cover">`` one.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit
from xml.etree.ElementTree import Element

from jobs.errors import ErrorCode
from jobs.ingest.book import Book, Chapter, Cover
from jobs.ingest.epub_archive import EpubArchive, local, parse_xml
from jobs.ingest.errors import BookRejected
from jobs.ingest.limits import IngestLimits
from jobs.ingest.xhtml import Document, declares_entities, decode_markup, extract, toc_links

CONTENT_TYPES = frozenset({"application/xhtml+xml", "text/html", "application/xml", "text/xml"})
NCX_TYPE = "application/x-dtbncx+xml"
AUTHOR_ROLES = frozenset({"aut", "author"})


@dataclass(frozen=True)
class _Item:
    path: str  # the member path it resolves to (it may be missing from the zip)
    media_type: str
    properties: frozenset[str]


@dataclass
class _Package:
    title: str | None = None
    creators: list[tuple[str, str | None]] = field(default_factory=list)  # (name, role)
    items: dict[str, _Item] = field(default_factory=dict)
    spine: list[tuple[_Item, bool]] = field(default_factory=list)  # (item, linear)
    ncx: _Item | None = None
    cover_id: str | None = None


@dataclass(frozen=True)
class _Entry:
    """A table-of-contents entry: a title and the place it points at."""

    title: str
    path: str
    fragment: str | None


def read_epub(data: bytes, title: str, limits: IngestLimits) -> Book:
    """Read an EPUB book; ``title`` is used when its metadata has none. Raises :class:`BookRejected`."""
    archive = EpubArchive(data, limits)
    archive.check_not_encrypted()
    opf_path = archive.container_rootfile()
    opf = archive.find(opf_path)
    if opf is None:
        raise BookRejected(f"not an EPUB: the package document {opf_path} named in META-INF/container.xml is missing")
    package = _package(parse_xml(archive.read(opf), opf), opf)
    book_title = package.title or title
    entries = _toc(archive, package)
    targets = {entry.path for entry in entries}
    spine = [(archive.find(item.path) or item.path, item, linear) for item, linear in package.spine]
    docs = [(path, _document(archive, item)) for path, item, linear in spine if linear or path in targets]
    chapters = _chapters(docs, entries, book_title)
    missing = [path for path, _ in docs if archive.find(path) is None]
    if not chapters and missing:
        raise BookRejected(
            f"not a readable EPUB: {len(missing)} of the {len(docs)} documents in the spine are missing from the zip "
            f"(first: {missing[0]})"
        )
    if not chapters:
        with_images = sum(doc.has_images for _, doc in docs)
        raise BookRejected(
            f"the book has no text to speak: {len(docs)} documents in the spine, {with_images} with images, "
            "none with text",
            code=ErrorCode.BOOK_HAS_NO_TEXT,
        )
    return Book(book_title, _author(package), chapters, _cover(archive, package), source_format="epub")


def _resolve(base: str, href: str) -> tuple[str, str | None] | None:
    """(member path, fragment) of an href relative to the member ``base``; None for other sites' URLs."""
    parts = urlsplit(href)
    if parts.scheme or parts.netloc:
        return None
    path = posixpath.normpath(posixpath.join(posixpath.dirname(base), unquote(parts.path))) if parts.path else base
    return path.lstrip("/"), unquote(parts.fragment) or None


def _package(root: Element, opf: str) -> _Package:
    package = _Package()
    roles: dict[str, str] = {}  # EPUB 3: <meta refines="#id" property="role">aut</meta>
    creators: list[tuple[str, str | None, str | None]] = []
    for element in root.iter():
        tag, text = local(element.tag), " ".join((element.text or "").split())
        if tag == "title" and text and package.title is None:
            package.title = text
        elif tag == "creator" and text:
            role = next((v for k, v in element.attrib.items() if local(k) == "role"), None)
            creators.append((text, role, element.get("id")))
        elif tag == "meta" and element.get("property") == "role" and element.get("refines"):
            roles[str(element.get("refines")).lstrip("#")] = text
        elif tag == "meta" and element.get("name") == "cover" and element.get("content"):
            package.cover_id = element.get("content")
        elif tag == "item" and element.get("id") and element.get("href"):
            resolved = _resolve(opf, str(element.get("href")))
            if resolved is not None:
                properties = frozenset(str(element.get("properties", "")).split())
                media_type = str(element.get("media-type", ""))
                package.items[str(element.get("id"))] = _Item(resolved[0], media_type, properties)
    package.creators = [(name, role or roles.get(ident or "")) for name, role, ident in creators]
    for element in root.iter():
        if local(element.tag) == "spine" and element.get("toc") in package.items:
            package.ncx = package.items[str(element.get("toc"))]
        elif local(element.tag) == "itemref" and element.get("idref") in package.items:
            package.spine.append((package.items[str(element.get("idref"))], element.get("linear", "yes") != "no"))
    if package.ncx is None:
        package.ncx = next((item for item in package.items.values() if item.media_type == NCX_TYPE), None)
    return package


def _author(package: _Package) -> str | None:
    authors = [name for name, role in package.creators if role is None or role.lower() in AUTHOR_ROLES]
    names = authors or [name for name, _ in package.creators[:1]]
    return ", ".join(dict.fromkeys(names)) or None


def _markup(archive: EpubArchive, member: str) -> str:
    markup = decode_markup(archive.read(member))
    if declares_entities(markup):
        raise BookRejected(f"unsafe XML in {member}: it declares entities (<!ENTITY), which are refused")
    return markup


def _toc(archive: EpubArchive, package: _Package) -> list[_Entry]:
    """The table of contents: the navigation document's, else the NCX's; entries outside the zip dropped."""
    entries: list[_Entry] = []
    nav = next((item for item in package.items.values() if "nav" in item.properties), None)
    if nav is not None and (member := archive.find(nav.path)):
        for label, href in toc_links(_markup(archive, member)):
            if resolved := _resolve(member, href):
                entries.append(_Entry(label, *resolved))
    if not entries and package.ncx is not None and (member := archive.find(package.ncx.path)):
        for point in parse_xml(archive.read(member), member).iter():
            if local(point.tag) != "navPoint":
                continue
            label = next((" ".join("".join(t.itertext()).split()) for t in point if local(t.tag) == "navLabel"), "")
            src = next((str(c.get("src")) for c in point if local(c.tag) == "content" and c.get("src")), None)
            if src and (resolved := _resolve(member, src)):
                entries.append(_Entry(label, *resolved))
    return [_Entry(e.title, archive.find(e.path) or e.path, e.fragment) for e in entries]


def _document(archive: EpubArchive, item: _Item) -> Document:
    """The text of one spine item; images, missing files, the nav document and link lists have none."""
    member = archive.find(item.path)
    if member is None or "nav" in item.properties:
        return Document()
    if item.media_type not in CONTENT_TYPES:
        return Document(has_images=item.media_type.startswith("image/") or item.media_type == "image/svg+xml")
    doc = extract(_markup(archive, member))
    if doc.is_link_list:
        return Document(heading=doc.heading, title=doc.title, has_images=doc.has_images)
    return doc


def _chapters(docs: list[tuple[str, Document]], entries: list[_Entry], book_title: str) -> tuple[Chapter, ...]:
    """Cut the spine's paragraphs into chapters where the entries point (see the module docstring)."""
    index = {path: i for i, (path, _) in enumerate(docs)}
    cuts: dict[tuple[int, int], list[str]] = {}
    for entry in entries:
        if entry.path in index:
            doc = docs[index[entry.path]][1]
            paragraph = doc.anchors.get(entry.fragment, 0) if entry.fragment else 0
            cuts.setdefault((index[entry.path], paragraph), []).append(entry.title)
    first = min(cuts, default=(len(docs), 0))
    for d, (_, doc) in enumerate(docs):  # front matter before the first entry, or every file without a TOC
        if (d, 0) < first and doc.paragraphs:
            cuts.setdefault((d, 0), [])
    starts = sorted(cuts)
    chapters: list[Chapter] = []
    for i, start in enumerate(starts):
        paragraphs = _span(docs, start, starts[i + 1] if i + 1 < len(starts) else None)
        if paragraphs:
            doc = docs[start[0]][1]
            titles = [t for t in dict.fromkeys(cuts[start]) if t]
            fallback = doc.heading or (doc.title if doc.title != book_title else None) or f"Chapter {len(chapters) + 1}"
            chapters.append(Chapter(": ".join(titles) or fallback, tuple(paragraphs)))
    return tuple(chapters)


def _span(docs: list[tuple[str, Document]], start: tuple[int, int], end: tuple[int, int] | None) -> list[str]:
    """The paragraphs from position ``start`` up to (not including) ``end``; positions are (file, paragraph)."""
    last = end[0] if end is not None else len(docs) - 1
    paragraphs: list[str] = []
    for d in range(start[0], last + 1):
        text = docs[d][1].paragraphs
        low = start[1] if d == start[0] else 0
        high = end[1] if end is not None and d == end[0] else len(text)
        paragraphs.extend(text[low:high])
    return paragraphs


def _cover(archive: EpubArchive, package: _Package) -> Cover | None:
    candidates = [item for item in package.items.values() if "cover-image" in item.properties]
    if package.cover_id in package.items:
        candidates.append(package.items[str(package.cover_id)])
    for item in candidates:
        member = archive.find(item.path)
        if member is not None and item.media_type.startswith("image/"):
            return Cover(item.media_type, archive.read(member))
    return None
