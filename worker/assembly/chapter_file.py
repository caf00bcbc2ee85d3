"""One chapter as a standalone audio file (mp3, opus, aac/m4a, flac, wav).

The encoding itself is :func:`echo_tts.audio_encode.encode_audio` (one encoder for the whole
service); this module only restricts the formats to the chapter-download ones and writes the
file. ``echo_tts.audio_encode`` imports torch, so it is imported on first use: importing
``worker.assembly`` stays torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_tts.errors import UnsupportedFormat

__all__ = ["CHAPTER_FORMATS", "ChapterFile", "encode_chapter", "write_chapter_file"]

CHAPTER_FORMATS = ("mp3", "opus", "aac", "flac", "wav")


@dataclass(frozen=True)
class ChapterFile:
    """A written chapter file: where, which format, its extension, Content-Type, rate and size."""

    path: str
    fmt: str
    extension: str
    content_type: str
    sample_rate: int
    size_bytes: int


def _check_format(fmt: str) -> None:
    if fmt not in CHAPTER_FORMATS:
        raise UnsupportedFormat(f"unsupported chapter format {fmt!r}; valid formats: {', '.join(CHAPTER_FORMATS)}")


def encode_chapter(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """The bytes of a ``fmt`` file holding mono float samples (N,); opus is always 48 kHz."""
    _check_format(fmt)
    from echo_tts.audio_encode import encode_audio  # torch: only when a chapter file is made

    return encode_audio(samples, sample_rate, fmt)


def write_chapter_file(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int, fmt: str) -> ChapterFile:
    """Encode one chapter to ``fmt`` and write it to ``path`` (the caller picks the name).

    Raises :class:`UnsupportedFormat` for a format outside :data:`CHAPTER_FORMATS`, and what
    ``encode_audio`` raises for empty or non-finite samples.
    """
    _check_format(fmt)
    from echo_tts.audio_encode import AUDIO_FORMATS, output_sample_rate

    blob = encode_chapter(samples, sample_rate, fmt)
    target = Path(path)
    target.write_bytes(blob)
    spec = AUDIO_FORMATS[fmt]
    rate = output_sample_rate(fmt, sample_rate)
    return ChapterFile(str(target), fmt, spec.extension, spec.content_type, rate, len(blob))
