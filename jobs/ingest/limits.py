"""The limits a book must stay within to be read (zip bombs, runaway books)."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class IngestLimits:
    """Limits on what :func:`jobs.ingest.read_book` reads; every refusal names the limit it hit.

    The zip limits apply to the sizes the zip's central directory declares: Python's zipfile never
    inflates a member past its declared size, so a lying header cannot smuggle more bytes in.
    """

    # all zip members together, uncompressed (and the size of a text or Markdown file)
    max_uncompressed_bytes: int = 256 * MIB
    # one zip member, uncompressed (a chapter or the cover image)
    max_member_bytes: int = 64 * MIB
    # members in the zip (a real EPUB has tens to a few thousands)
    max_members: int = 10_000
    # uncompressed / compressed size of one member; XHTML deflates 3-10x, a zip bomb 1000x
    max_ratio: float = 100.0
    # members smaller than this are not held to max_ratio (they cannot do harm)
    ratio_floor_bytes: int = 1 * MIB
    # chapters in the book once read (one M4B chapter marker each)
    max_chapters: int = 2_000
    # characters of text in the book once read ("War and Peace" has about 3.2 million)
    max_characters: int = 5_000_000
