"""write_m4b / read_chapters: an M4B with chapter markers, metadata and cover, read back by FFmpeg."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from echo_tts.errors import InvalidAudio, InvalidInput
from worker.assembly import ChapterAudio, read_chapters, write_m4b

RATE = 44_100
AAC_FRAME = 1024
LENGTHS = (2 * RATE + 123, 3 * RATE + 7, RATE + 999)  # deliberately not multiples of 1024
TITLES = ("Chapter One", "Chapter Two: The Middle", "Épilogue")


def book(seed: int = 0) -> list[ChapterAudio]:
    rng = np.random.default_rng(seed)
    return [
        ChapterAudio(title, (0.1 * rng.standard_normal(n)).astype(np.float32))
        for title, n in zip(TITLES, LENGTHS, strict=True)
    ]


def jpeg_cover(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="image2pipe") as out:
        stream = out.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        image = np.full((height, width, 3), (200, 80, 40), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


def test_three_chapters_read_back_with_their_titles_at_the_sample_exact_offsets(tmp_path):
    # Given three chapters of odd lengths, a title, an author and a JPEG cover
    cover = jpeg_cover()
    path = tmp_path / "book.m4b"
    # When the M4B is written and read back with PyAV
    info = write_m4b(path, book(), RATE, title="A Test Book", author="Ada Author", cover=cover)
    contents = read_chapters(path)
    # Then there are three chapters with those titles, each start within one AAC frame of the
    # cumulative sample count, and each end at the next start
    starts = np.cumsum((0, *LENGTHS))
    assert [c[0] for c in contents.chapters] == list(TITLES)
    for index, (_, start_s, end_s) in enumerate(contents.chapters):
        assert abs(start_s * RATE - starts[index]) <= AAC_FRAME
        assert abs(end_s * RATE - starts[index + 1]) <= AAC_FRAME
    assert [m.start_sample for m in info.chapters] == list(starts[:-1])
    # And the duration is the sum of the chapters within 1%
    assert contents.duration_s == pytest.approx(sum(LENGTHS) / RATE, rel=0.01)
    assert info.duration_s == pytest.approx(sum(LENGTHS) / RATE)
    # And the title, author and audiobook tags are there, and the cover is stored byte for byte
    assert contents.metadata["title"] == "A Test Book" and contents.metadata["album"] == "A Test Book"
    assert contents.metadata["artist"] == "Ada Author" and contents.metadata["album_artist"] == "Ada Author"
    assert contents.metadata["major_brand"].strip() == "M4B"
    assert info.cover_attached and contents.cover == cover and info.notes == ()


def test_the_audio_decodes_as_mono_aac_of_the_book_length(tmp_path):
    # Given a written M4B without a cover
    path = tmp_path / "book.m4b"
    write_m4b(path, book(seed=1), RATE, title="T", author="A")
    # When the audio is decoded
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
        codec = stream.codec_context.name
    decoded = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    # Then it is mono AAC at 44.1 kHz, its length within one frame of the input, and not silent
    assert codec == "aac" and frames[0].sample_rate == RATE and len(frames[0].layout.channels) == 1
    assert abs(decoded.size - sum(LENGTHS)) <= AAC_FRAME
    assert 0.05 < float(np.sqrt(np.mean(decoded**2))) < 0.2
    assert read_chapters(path).cover is None


def test_an_unreadable_cover_is_left_out_with_a_note_and_the_book_is_still_written(tmp_path):
    # Given cover bytes that are not an image
    path = tmp_path / "book.m4b"
    # When the book is written
    info = write_m4b(path, book(), RATE, title="T", author="A", cover=b"not an image")
    # Then the book has its chapters, no cover, and a note says why
    assert len(read_chapters(path).chapters) == 3
    assert not info.cover_attached and "cover not stored" in info.notes[0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"chapters": []}, InvalidInput, "at least one chapter"),
        ({"sample_rate": 44_000}, InvalidInput, "44000 Hz"),
        ({"title": " "}, InvalidInput, "title"),
        ({"chapters": [ChapterAudio("", np.zeros(10, np.float32))]}, InvalidInput, "title"),
        ({"chapters": [ChapterAudio("Empty", np.zeros(0, np.float32))]}, InvalidAudio, "no samples"),
        ({"chapters": [ChapterAudio("NaN", np.full(5000, np.nan, np.float32))]}, InvalidAudio, "NaN"),
    ],
)
def test_bad_books_are_refused_and_leave_no_file_behind(tmp_path, kwargs, error, match):
    # Given one bad argument
    args = {"chapters": book(), "sample_rate": RATE, "title": "T", "author": "A"} | kwargs
    path = tmp_path / "book.m4b"
    # When the book is written / Then it is refused, and no file or partial file is left
    with pytest.raises(error, match=match):
        write_m4b(path, args.pop("chapters"), args.pop("sample_rate"), **args)
    assert list(tmp_path.iterdir()) == []
