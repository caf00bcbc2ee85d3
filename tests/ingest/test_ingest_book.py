"""The Book model (JSON round trip, chapter selection), format detection, and the import boundary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from book_files import lighthouse_epub3

from jobs.errors import ErrorCode
from jobs.ingest import Book, Chapter, Cover, InvalidChapterSelection, detect_format, read_book

ROOT = Path(__file__).resolve().parents[2]
BOOK = Book(
    title="T",
    author=None,
    chapters=(Chapter("A", ("a1", "a2")), Chapter("B", ("b1",)), Chapter("C", ("c1",))),
    cover=Cover("image/png", b"\x89PNG"),
    source_format="markdown",
)


def test_a_book_round_trips_through_json_with_the_cover_passed_separately() -> None:
    # Given a book with a cover
    # When it goes to a dict, through JSON, and back with its cover
    data = json.loads(json.dumps(BOOK.to_dict()))
    back = Book.from_dict(data, cover=BOOK.cover)
    # Then it is the same book, and the dict describes the cover without its bytes
    assert back == BOOK
    assert data["cover"] == {"media_type": "image/png", "size": 4}
    assert Book.from_dict(data).cover is None


def test_select_keeps_the_chosen_chapters_in_book_order() -> None:
    # Given a book of three chapters, When chapters 2 and 0 (and 2 again) are selected
    subset = BOOK.select([2, 0, 2])
    # Then the subset has chapters 0 and 2 in book order, and the rest of the book
    assert [c.title for c in subset.chapters] == ["A", "C"]
    assert (subset.title, subset.cover, subset.source_format) == (BOOK.title, BOOK.cover, BOOK.source_format)


@pytest.mark.parametrize(
    ("indices", "message"), [([3], "chapter index 3 does not exist"), ([], "no chapters selected")]
)
def test_select_refuses_chapters_the_book_does_not_have(indices: list[int], message: str) -> None:
    with pytest.raises(InvalidChapterSelection) as caught:
        BOOK.select(indices)
    assert caught.value.code == ErrorCode.INVALID_INPUT
    assert caught.value.message.startswith(message)


@pytest.mark.parametrize(
    ("data", "filename", "content_type", "expected"),
    [
        (b"PK\x03\x04rest", "book.txt", None, "epub"),  # a zip is an EPUB whatever its name
        (b"x", "Book.EPUB", None, "epub"),
        (b"x", "notes.md", None, "markdown"),
        (b"x", "notes.markdown", "text/plain", "markdown"),  # the extension wins over the content type
        (b"x", "upload", "text/markdown; charset=utf-8", "markdown"),
        (b"x", "upload", None, "text"),
        (b"x", "story.TXT", None, "text"),
        (b"x", "story.rst", "text/x-rst", "text"),
    ],
)
def test_the_format_is_chosen_by_magic_then_extension_then_content_type(
    data: bytes, filename: str, content_type: str | None, expected: str
) -> None:
    assert detect_format(data, filename, content_type) == expected


def test_a_book_read_from_an_epub_is_json_safe() -> None:
    book = read_book(lighthouse_epub3(), "upload.epub")
    assert Book.from_dict(json.loads(json.dumps(book.to_dict())), cover=book.cover) == book


def test_jobs_ingest_imports_no_torch_flask_or_service_packages() -> None:
    # Given a fresh interpreter, When it imports jobs.ingest
    probe = (
        "import sys, jobs.ingest\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'torchaudio', 'numpy', 'flask', 'echo_tts', 'api', 'worker', 'celery', 'redis', 'boto3'))\n"
        "print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    # Then none of the heavy or service packages were imported
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
