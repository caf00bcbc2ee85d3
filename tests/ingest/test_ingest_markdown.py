"""Markdown books: chapters at # and ## headings, syntax stripped for speech."""

from __future__ import annotations

from jobs.ingest import read_book

NOVEL = """---
author: "Eve Writer"
---
# The Glass Road

A short *foreword* before the first chapter.

## Departure

It was **bold** and _quiet_ and `plain`, with a [link](https://example.org) and ![a map](map.png).
A second line of the same paragraph.

- first item
- second item

> A quoted line.

```python
print("never read aloud")
```

### A scene heading

snake_case_names stay as they are, \\*escaped stars\\* too. ~~Struck~~ text stays. <span>Raw</span> HTML &amp; more.

Setext Chapter
--------------

| Name | Role |
|------|------|
| Ann  | Pilot |

Last words.
"""


def test_a_lone_top_heading_is_the_title_and_second_level_headings_are_chapters() -> None:
    # Given a Markdown book with front matter, one # title and ## chapters (one of them setext)
    # When it is read
    book = read_book(NOVEL.encode(), "glass-road.md")
    # Then the # heading is the title, the foreword is a chapter under it, the ## headings are chapters
    assert (book.title, book.author, book.source_format) == ("The Glass Road", "Eve Writer", "markdown")
    assert [c.title for c in book.chapters] == ["The Glass Road", "Departure", "Setext Chapter"]
    assert book.chapters[0].paragraphs == ("The Glass Road", "A short foreword before the first chapter.")


def test_markdown_syntax_is_stripped_for_speech() -> None:
    # Given the same book
    book = read_book(NOVEL.encode(), "glass-road.md")
    # When the "Departure" chapter is looked at
    paragraphs = book.chapters[1].paragraphs
    # Then emphasis, code and links keep their text, images and code blocks are gone, items are paragraphs
    assert paragraphs == (
        "Departure",
        "It was bold and quiet and plain, with a link and . A second line of the same paragraph.",
        "first item",
        "second item",
        "A quoted line.",
        "A scene heading",
        "snake_case_names stay as they are, *escaped stars* too. Struck text stays. Raw HTML & more.",
    )
    assert book.chapters[2].paragraphs == ("Setext Chapter", "Name, Role", "Ann, Pilot", "Last words.")


def test_several_top_headings_are_all_chapters_and_the_title_comes_from_the_file_name() -> None:
    # Given Markdown with two # headings and a ## under the first
    text = "Intro text.\n\n# One\n\nAlpha.\n\n## One, part two\n\nBeta.\n\n# Two\n\nGamma.\n"
    # When it is read
    book = read_book(text.encode(), "my_notes.markdown")
    # Then every # and ## starts a chapter; text before the first heading is a chapter titled like the book
    assert book.title == "my notes"
    assert [(c.title, c.paragraphs[-1]) for c in book.chapters] == [
        ("my notes", "Intro text."),
        ("One", "Alpha."),
        ("One, part two", "Beta."),
        ("Two", "Gamma."),
    ]


def test_markdown_without_headings_is_one_chapter() -> None:
    book = read_book(b"Just one paragraph.\n\nAnd another.\n", "plain.md")
    assert [(c.title, c.paragraphs) for c in book.chapters] == [("plain", ("Just one paragraph.", "And another."))]
