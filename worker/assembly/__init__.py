"""Audiobook assembly, audio side: join trimmed segments with pauses, normalise loudness (ACX or
LUFS), write chapter files and the M4B with chapter markers. Trimming is
``echo_tts.audio_encode.trim_silence``.

Torch-free on import (numpy, soundfile, PyAV, pyloudnorm); only writing a chapter file loads
``echo_tts.audio_encode`` and with it torch.
"""

from .chapter_file import CHAPTER_FORMATS, ChapterFile, encode_chapter, write_chapter_file
from .join import JoinedChapter, PauseSettings, Segment, SegmentEnd, join_chapter
from .loudness import ACX_PEAK_DBFS, ACX_RMS_RANGE_DBFS, LoudnessReport, measure, normalize_for_acx
from .m4b import ChapterAudio, ChapterMark, M4bContents, M4bInfo, chapter_marks, read_chapters, write_m4b

__all__ = [
    "ACX_PEAK_DBFS",
    "ACX_RMS_RANGE_DBFS",
    "CHAPTER_FORMATS",
    "ChapterAudio",
    "ChapterFile",
    "ChapterMark",
    "JoinedChapter",
    "LoudnessReport",
    "M4bContents",
    "M4bInfo",
    "PauseSettings",
    "Segment",
    "SegmentEnd",
    "chapter_marks",
    "encode_chapter",
    "join_chapter",
    "measure",
    "normalize_for_acx",
    "read_chapters",
    "write_chapter_file",
    "write_m4b",
]
