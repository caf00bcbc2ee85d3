"""Writing an audiobook as one M4B (AAC-LC in MP4) with chapter markers, metadata and a cover.

Chapter starts come from sample counts: chapter ``i`` starts at the sum of the lengths of the
chapters before it, written in a ``1/sample_rate`` time base, so markers are sample-exact in
what we hand FFmpeg. The MP4 muxer stores them twice (a Nero ``chpl`` atom and a QuickTime
chapter text track, which Apple Books reads) at millisecond resolution, so a marker read back
is within half a millisecond (22 samples at 44.1 kHz) of the exact start.

The file is written with FFmpeg's ``mp4`` muxer and the ``M4B `` brand rather than the
``ipod`` muxer, because PyAV refuses a JPEG/PNG stream in an ``ipod`` container and the cover
must go in as an attached picture (MP4 ``covr`` atom). ``moov`` goes at the front
(``+faststart``) so players can stream and seek from a presigned URL.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from echo_tts.errors import InvalidAudio, InvalidInput

__all__ = [
    "ChapterAudio",
    "ChapterMark",
    "M4bContents",
    "M4bInfo",
    "chapter_marks",
    "read_chapters",
    "write_m4b",
]

AAC_FRAME = 1024  # samples per AAC-LC frame: the encoder takes exactly this many per frame
AAC_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
BITRATE_RANGE = (16_000, 320_000)  # bits/s: below 16k AAC-LC speech is mush, above 320k is waste for mono
COVER_CODECS = ("mjpeg", "png")  # what an MP4 'covr' atom holds and every player shows
ENCODE_CHUNK = 64 * AAC_FRAME  # samples converted/checked at once while streaming a chapter
AUDIOBOOK_MEDIA_TYPE = "2"  # iTunes 'stik' value for Audiobook


@dataclass(frozen=True)
class ChapterAudio:
    """One chapter: its title and mono float samples (N,) in [-1, 1] (may be an ``np.memmap``)."""

    title: str
    samples: np.ndarray


@dataclass(frozen=True)
class ChapterMark:
    """Where a chapter lies in the book, in samples (exact) and seconds."""

    title: str
    start_sample: int
    end_sample: int
    sample_rate: int

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end_sample / self.sample_rate


@dataclass(frozen=True)
class M4bInfo:
    """What :func:`write_m4b` wrote. ``notes`` says what could not be stored (e.g. a bad cover)."""

    path: str
    sample_rate: int
    num_samples: int
    chapters: tuple[ChapterMark, ...]
    cover_attached: bool
    notes: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


@dataclass(frozen=True)
class M4bContents:
    """What an M4B holds as FFmpeg reads it back: ``chapters`` as ``(title, start_s, end_s)``."""

    chapters: tuple[tuple[str, float, float], ...]
    duration_s: float
    metadata: dict[str, str] = field(default_factory=dict)
    cover: bytes | None = None


def chapter_marks(chapters: Sequence[ChapterAudio], sample_rate: int) -> tuple[ChapterMark, ...]:
    """Sample-exact chapter positions: each starts where the previous one's samples end."""
    marks: list[ChapterMark] = []
    position = 0
    for index, chapter in enumerate(chapters):
        if not isinstance(chapter.title, str) or not chapter.title.strip():
            raise InvalidInput(f"chapter {index} needs a non-empty title, got {chapter.title!r}")
        if np.ndim(chapter.samples) != 1:
            raise InvalidAudio(f"chapter {index} ({chapter.title!r}): expected mono samples of shape (N,)")
        length = len(chapter.samples)
        if length == 0:
            raise InvalidAudio(f"chapter {index} ({chapter.title!r}) has no samples")
        marks.append(ChapterMark(chapter.title, position, position + length, int(sample_rate)))
        position += length
    return tuple(marks)


def _check_book(
    chapters: Sequence[ChapterAudio], sample_rate: int, title: str, author: str | None, bitrate: int
) -> None:
    if not chapters:
        raise InvalidInput("an M4B needs at least one chapter")
    if sample_rate not in AAC_SAMPLE_RATES:
        valid = ", ".join(str(rate) for rate in AAC_SAMPLE_RATES)
        raise InvalidInput(f"AAC cannot be written at {sample_rate} Hz; valid rates: {valid}")
    if not BITRATE_RANGE[0] <= bitrate <= BITRATE_RANGE[1]:
        raise InvalidInput(f"bitrate must be within {BITRATE_RANGE[0]}-{BITRATE_RANGE[1]} bit/s, got {bitrate}")
    if not isinstance(title, str) or not title.strip():
        raise InvalidInput(f"title must be a non-empty string, got {title!r}")
    if author is not None and not isinstance(author, str):
        raise InvalidInput(f"author must be a string or None, got {author!r}")


def _add_cover(out: av.container.OutputContainer, cover: bytes | None) -> tuple[av.Packet[Any] | None, str | None]:
    """Add the cover as an attached-picture stream; returns its one packet, or a note why not."""
    if cover is None:
        return None, None
    try:
        with av.open(io.BytesIO(cover), mode="r") as image:
            if not image.streams.video:
                return None, "cover not stored: no image in the cover bytes"
            source = image.streams.video[0]
            codec = source.codec_context.name
            if codec not in COVER_CODECS:
                return None, f"cover not stored: {codec} images cannot go in an MP4 cover (JPEG or PNG only)"
            packet = next((p for p in image.demux(source) if p.size), None)
            if packet is None:
                return None, "cover not stored: the image has no data"
            stream = out.add_stream_from_template(source)
    except av.FFmpegError as exc:
        return None, f"cover not stored: not a readable image ({exc})"
    stream.disposition = av.stream.Disposition.attached_pic
    packet.stream = stream
    return packet, None


def _clean(samples: np.ndarray, title: str) -> np.ndarray:
    block = np.asarray(samples, dtype=np.float32)
    if not np.isfinite(block).all():
        raise InvalidAudio(f"chapter {title!r} contains NaN or infinite samples")
    return np.clip(block, -1.0, 1.0)


def _encode_frame(
    out: av.container.OutputContainer, stream: av.AudioStream, samples: np.ndarray, pts: int, rate: int
) -> int:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, :]), format="flt", layout="mono")
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    frame.pts = pts
    for packet in stream.encode(frame):
        out.mux(packet)
    return pts + samples.size


def _encode_book(
    out: av.container.OutputContainer, stream: av.AudioStream, chapters: Sequence[ChapterAudio], rate: int
) -> None:
    """Stream every chapter through the encoder in 1024-sample frames, chapter by chapter.

    Only ``ENCODE_CHUNK`` samples are converted at a time; a chapter's last partial frame is
    carried into the next chapter, so no padding is inserted and offsets stay exact.
    """
    pending = np.zeros(0, dtype=np.float32)
    pts = 0
    for chapter in chapters:
        for start in range(0, len(chapter.samples), ENCODE_CHUNK):
            block = _clean(chapter.samples[start : start + ENCODE_CHUNK], chapter.title)
            if pending.size:
                block = np.concatenate([pending, block])
            usable = block.size - block.size % AAC_FRAME
            for offset in range(0, usable, AAC_FRAME):
                pts = _encode_frame(out, stream, block[offset : offset + AAC_FRAME], pts, rate)
            pending = block[usable:].copy()
    if pending.size:
        _encode_frame(out, stream, pending, pts, rate)
    for packet in stream.encode(None):
        out.mux(packet)


def write_m4b(
    path: str | os.PathLike[str],
    chapters: Sequence[ChapterAudio],
    sample_rate: int,
    *,
    title: str,
    author: str | None,
    cover: bytes | None = None,
    bitrate: int = 64_000,
) -> M4bInfo:
    """Write ``chapters`` as one mono AAC-LC M4B at ``path`` with one chapter marker each.

    Metadata: ``title`` (also the album), ``author`` (artist and album artist; None or empty: left out), genre
    Audiobook and the iTunes audiobook media type. ``cover`` (JPEG or PNG bytes) becomes an
    attached picture; a cover that is not a readable JPEG/PNG is left out and the reason put
    in ``M4bInfo.notes`` rather than failing the book. Samples are clipped to [-1, 1]. The
    file is written next to ``path`` under a temporary name and renamed when complete.
    """
    _check_book(chapters, sample_rate, title, author, bitrate)
    marks = chapter_marks(chapters, sample_rate)
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    options = {"brand": "M4B ", "movflags": "+faststart"}
    try:
        with av.open(str(partial), mode="w", format="mp4", options=options) as out:
            stream = out.add_stream("aac", rate=sample_rate, layout="mono")
            stream.bit_rate = bitrate
            cover_packet, note = _add_cover(out, cover)
            out.metadata.update({"title": title, "album": title, "genre": "Audiobook"})
            if author and author.strip():  # a book without a known author has no artist tags
                out.metadata.update({"artist": author, "album_artist": author})
            out.metadata["media_type"] = AUDIOBOOK_MEDIA_TYPE
            out.set_chapters(
                [
                    {
                        "id": index + 1,
                        "start": mark.start_sample,
                        "end": mark.end_sample,
                        "time_base": Fraction(1, sample_rate),
                        "metadata": {"title": mark.title},
                    }
                    for index, mark in enumerate(marks)
                ]
            )
            if cover_packet is not None:
                out.mux(cover_packet)
            _encode_book(out, stream, chapters, sample_rate)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    notes = (note,) if note else ()
    return M4bInfo(str(target), sample_rate, marks[-1].end_sample, marks, cover_packet is not None, notes)


def read_chapters(path: str | os.PathLike[str]) -> M4bContents:
    """Read back an M4B (or any MP4) with FFmpeg: chapters, duration, metadata and cover bytes."""
    with av.open(str(path)) as container:
        chapters = tuple(
            (
                str(chapter["metadata"].get("title", "")),
                _seconds(chapter["start"], chapter["time_base"]),
                _seconds(chapter["end"], chapter["time_base"]),
            )
            for chapter in container.chapters()
        )
        audio = container.streams.audio[0] if container.streams.audio else None
        if audio is not None and audio.duration is not None and audio.time_base is not None:
            duration = float(audio.duration * audio.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        metadata = dict(container.metadata)
        cover = _read_attached_picture(container)
    return M4bContents(chapters, duration, metadata, cover)


def _seconds(value: int, time_base: Fraction | None) -> float:
    return float(value * time_base) if time_base is not None else float(value) / av.time_base


def _read_attached_picture(container: av.container.InputContainer) -> bytes | None:
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            # FFmpeg queues attached pictures ahead of all other packets: this reads no audio.
            packet = next((p for p in container.demux(stream) if p.size), None)
            return bytes(packet) if packet is not None else None
    return None
