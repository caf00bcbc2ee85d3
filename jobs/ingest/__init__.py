"""Book ingest: read an uploaded EPUB, Markdown or plain-text book into a :class:`Book` of chapters
and paragraphs, safely (zip bombs, XML entities, path traversal and DRM are refused with a
:class:`BookRejected` that says why), and the speech normalisation step for its text.

Torch-free and Flask-free, like all of :mod:`jobs`; the only third-party import is ``defusedxml``.
"""

from __future__ import annotations

from jobs.errors import ErrorCode
from jobs.ingest.book import SOURCE_FORMATS, Book, Chapter, Cover
from jobs.ingest.epub import read_epub
from jobs.ingest.errors import BookRejected, InvalidChapterSelection
from jobs.ingest.limits import IngestLimits
from jobs.ingest.markdown import read_markdown
from jobs.ingest.plaintext import read_text
from jobs.ingest.speech_text import normalize_for_speech
from jobs.ingest.textfile import title_from_filename

__all__ = [
    "SOURCE_FORMATS",
    "Book",
    "BookRejected",
    "Chapter",
    "Cover",
    "IngestLimits",
    "InvalidChapterSelection",
    "detect_format",
    "normalize_for_speech",
    "read_book",
]

EXTENSIONS = {
    ".epub": "epub",
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdown": "markdown",
    ".txt": "text",
    ".text": "text",
}
CONTENT_TYPES = {
    "application/epub+zip": "epub",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}
ZIP_MAGIC = b"PK\x03\x04"
# Formats people upload that are not supported, by their first bytes: refused with a clear message.
FOREIGN_MAGIC = (
    (0, b"%PDF", "a PDF"),
    (60, b"BOOKMOBI", "a MOBI/AZW (Kindle) book"),
    (0, b"\xd0\xcf\x11\xe0", "an old Word document"),
    (0, b"{\\rtf", "an RTF document"),
)
DEFAULT_LIMITS = IngestLimits()
SUPPORTED = "EPUB (.epub), Markdown (.md, .markdown) or plain text (.txt)"


def detect_format(data: bytes, filename: str, content_type: str | None = None) -> str:
    """The format to read ``data`` as (one of :data:`SOURCE_FORMATS`): a zip is an EPUB whatever its
    name; else the file name's extension decides, then the content type; a file without an extension,
    or with an unknown one but a ``text/*`` content type, is plain text. Refuses empty files, other
    extensions and known foreign formats (PDF, MOBI, Word, RTF) by their first bytes."""
    if not data:
        raise BookRejected("the file is empty")
    if data.startswith(ZIP_MAGIC):
        return "epub"
    for offset, magic, what in FOREIGN_MAGIC:
        if data[offset : offset + len(magic)] == magic:
            raise BookRejected(f"{what} is not a supported book format: upload {SUPPORTED}")
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].lower()
    extension = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if extension in EXTENSIONS:
        return EXTENSIONS[extension]
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type in CONTENT_TYPES:
        return CONTENT_TYPES[media_type]
    if extension and not media_type.startswith("text/"):
        raise BookRejected(f"unsupported book format {extension!r} ({filename}): upload {SUPPORTED}")
    return "text"


def read_book(
    data: bytes, filename: str, *, content_type: str | None = None, limits: IngestLimits = DEFAULT_LIMITS
) -> Book:
    """Read an uploaded book (format from :func:`detect_format`) within ``limits``.

    Raises :class:`BookRejected` (``code`` INVALID_BOOK, BOOK_HAS_NO_TEXT or BOOK_DRM) with a message
    that says what is wrong and names the limit involved.
    """
    source_format = detect_format(data, filename, content_type)
    title = title_from_filename(filename)
    reader = {"epub": read_epub, "markdown": read_markdown, "text": read_text}[source_format]
    book = reader(data, title, limits)
    if len(book.chapters) > limits.max_chapters:
        raise BookRejected(
            f"the book has {len(book.chapters):,} chapters, over the limit max_chapters={limits.max_chapters:,}"
        )
    if book.characters > limits.max_characters:
        raise BookRejected(
            f"the book has {book.characters:,} characters of text, "
            f"over the limit max_characters={limits.max_characters:,}"
        )
    if not book.characters:
        raise BookRejected("the book has no text to speak", code=ErrorCode.BOOK_HAS_NO_TEXT)
    return book
