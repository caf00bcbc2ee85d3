"""write_chapter_file: one chapter in each download format, decoded back by FFmpeg."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from echo_tts.errors import UnsupportedFormat
from worker.assembly import CHAPTER_FORMATS, write_chapter_file

RATE = 44_100
REPO = Path(__file__).resolve().parents[2]
CODECS = {"mp3": "mp3", "opus": "opus", "aac": "aac", "flac": "flac", "wav": "pcm_s16le"}


@pytest.mark.parametrize("fmt", CHAPTER_FORMATS)
def test_a_chapter_file_in_each_format_decodes(tmp_path, fmt):
    # Given one second of tone
    t = np.arange(RATE) / RATE
    samples = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    # When it is written as a chapter file
    info = write_chapter_file(tmp_path / f"chapter.{fmt}", samples, RATE, fmt)
    # Then FFmpeg decodes it with the right codec, as mono, about one second long
    with av.open(info.path) as container:
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
        decoded = sum(frame.samples for frame in frames)
        assert stream.codec_context.name.startswith(CODECS[fmt]) and len(frames[0].layout.channels) == 1
    assert frames[0].sample_rate == info.sample_rate == (48_000 if fmt == "opus" else RATE)
    assert abs(decoded - info.sample_rate) <= 2048
    assert info.size_bytes == (tmp_path / f"chapter.{fmt}").stat().st_size > 0
    assert info.extension == ("m4a" if fmt == "aac" else fmt)


def test_a_format_outside_the_chapter_formats_is_refused(tmp_path):
    # Given raw pcm (fine for speech, not a chapter download) / When written / Then UnsupportedFormat
    with pytest.raises(UnsupportedFormat, match="mp3, opus, aac, flac, wav"):
        write_chapter_file(tmp_path / "chapter.pcm", np.zeros(100, np.float32), RATE, "pcm")
    assert not (tmp_path / "chapter.pcm").exists()


def test_importing_the_assembly_package_does_not_import_torch():
    # Given a fresh interpreter / When it imports worker.assembly / Then torch is not loaded
    code = "import sys, worker.assembly; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO).returncode == 0
