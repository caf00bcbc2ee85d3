"""Plain-text books: chapter headings, paragraphs, encodings."""

from __future__ import annotations

import pytest

from jobs.ingest import read_book

STORY = """The Tin Clock
by Fay Maker


CHAPTER I.
The Shop

Old Tom kept a shop.
He mended clocks.

It was a small shop.

Chapter 2: The Storm

Rain fell.

Chapter Three - Morning
The sun rose over the hills and the village woke slowly.
Birds sang.

EPILOGUE

All was well.
"""


def test_chapter_headings_start_chapters_and_blank_lines_split_paragraphs() -> None:
    # Given a text with "CHAPTER I." + title line, "Chapter 2: Title", "Chapter Three - Title" and EPILOGUE
    # When it is read
    book = read_book(STORY.encode(), "tin_clock.txt")
    # Then the text before the first heading is its own chapter, then one chapter per heading
    assert book.source_format == "text"
    assert [c.title for c in book.chapters] == [
        "tin clock",
        "CHAPTER I: The Shop",
        "Chapter 2: The Storm",
        "Chapter Three: Morning",
        "EPILOGUE",
    ]
    # And paragraphs are the blank-line blocks, lines joined; the heading is the first paragraph
    assert book.chapters[1].paragraphs == (
        "CHAPTER I: The Shop",
        "Old Tom kept a shop. He mended clocks.",
        "It was a small shop.",
    )
    assert book.chapters[3].paragraphs[1] == "The sun rose over the hills and the village woke slowly. Birds sang."


def test_a_table_of_contents_block_and_prose_mentioning_chapters_are_not_headings() -> None:
    # Given a contents block of headings and a paragraph that starts with "Chapter 3"
    prose = "Chapter 3 was, she said, the hardest one to write of all of them, by far, and it showed in every line."
    text = f"Contents\nChapter 1. Start\nChapter 2. End\n\n{prose}\n"
    # When it is read
    book = read_book(text.encode(), "x.txt")
    # Then there is one chapter with both paragraphs
    assert len(book.chapters) == 1 and len(book.chapters[0].paragraphs) == 2


def test_a_text_without_headings_is_one_chapter() -> None:
    book = read_book(b"One.\r\n\r\nTwo.\r\n", "note.txt")
    assert [(c.title, c.paragraphs) for c in book.chapters] == [("note", ("One.", "Two."))]


def test_project_gutenberg_boilerplate_is_dropped_and_its_fields_used() -> None:
    # Given a Project Gutenberg text with its header and licence footer
    text = (
        "The Project Gutenberg eBook of Tales\n\nTitle: Tales\n\nAuthor: Gus Teller\n\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK TALES ***\n\nCHAPTER I\n\nOnce.\n\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK TALES ***\n\nLicence text that is not read.\n"
    )
    # When it is read
    book = read_book(text.encode(), "pg123.txt")
    # Then only the text between the markers is kept, and the title and author come from the header
    assert (book.title, book.author) == ("Tales", "Gus Teller")
    assert [c.paragraphs for c in book.chapters] == [("CHAPTER I", "Once.")]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("Caf\u00e9 \u2014 na\u00efve".encode(), "Caf\u00e9 \u2014 na\u00efve"),  # UTF-8
        (b"\xef\xbb\xbf" + "Caf\u00e9".encode(), "Caf\u00e9"),  # UTF-8 with a BOM
        ("Caf\u00e9".encode("utf-16"), "Caf\u00e9"),  # UTF-16 with a BOM
        ("Caf\u00e9 \u201cquoted\u201d".encode("cp1252"), "Caf\u00e9 \u201cquoted\u201d"),  # Windows-1252
        (b"Caf\xe9 \x81 ok", "Caf\u00e9 ok"),  # 0x81 is undefined in cp1252: Latin-1, control dropped
    ],
)
def test_encodings_follow_the_rule_and_bad_bytes_never_crash(data: bytes, expected: str) -> None:
    # Given text in one of the encodings the rule covers
    # When it is read
    book = read_book(data, "enc.txt")
    # Then it decodes as the rule says
    assert book.chapters[0].paragraphs == (expected,)
