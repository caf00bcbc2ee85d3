"""Recognise audio containers from their first bytes, without decoding (the API has no torch or PyAV).

This is a gate against obvious non-audio uploads; the worker's decoder remains the final judge.
For WAV and FLAC the header also gives the duration, so an overlong reference is refused at once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEAD_BYTES = 64 * 1024  # enough for a WAV fmt chunk behind LIST/bext chunks, and FLAC's STREAMINFO


@dataclass(frozen=True)
class AudioKind:
    extension: str  # how we store it: voices/{id}/reference.{extension}
    content_type: str
    duration_s: float | None = None  # known from the header for WAV and FLAC


def _mpeg_frame(head: bytes) -> bool:
    """An MPEG audio frame header (MP3) at the start: 11 sync bits, a valid version, layer and bitrate."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer, bitrate = (head[1] >> 3) & 3, (head[1] >> 1) & 3, head[2] >> 4
    return version != 1 and layer != 0 and bitrate not in (0, 15) and (head[2] >> 2) & 3 != 3


def _adts_frame(head: bytes) -> bool:
    """An ADTS frame header (raw AAC): 12 sync bits with layer 0."""
    return len(head) >= 7 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0


def _wav_duration(head: bytes) -> float | None:
    pos, rate, block = 12, 0, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if chunk == b"fmt " and pos + 22 <= len(head):
            rate, block = struct.unpack_from("<I", head, pos + 12)[0], struct.unpack_from("<H", head, pos + 20)[0]
        elif chunk == b"data":
            return size / (rate * block) if rate and block and size != 0xFFFFFFFF else None
        pos += 8 + size + (size & 1)
    return None


def _flac_duration(head: bytes) -> float | None:
    if len(head) < 26 or head[4] & 0x7F != 0:  # the first metadata block must be STREAMINFO
        return None
    bits = int.from_bytes(head[18:26], "big")
    rate, samples = bits >> 44, bits & ((1 << 36) - 1)
    return samples / rate if rate and samples else None


def sniff_audio(head: bytes) -> AudioKind | None:
    """The container of ``head`` (the first bytes of an upload), or None when it is not audio we know."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return AudioKind("wav", "audio/wav", _wav_duration(head))
    if head[:4] == b"fLaC":
        return AudioKind("flac", "audio/flac", _flac_duration(head))
    if head[:4] == b"OggS":
        return AudioKind("ogg", "audio/ogg")
    if head[:3] == b"ID3" or _mpeg_frame(head):
        return AudioKind("mp3", "audio/mpeg")
    if _adts_frame(head):
        return AudioKind("aac", "audio/aac")
    if head[4:8] == b"ftyp":
        return AudioKind("m4a", "audio/mp4")
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return AudioKind("aiff", "audio/aiff")
    if head[:4] == b"\x1aE\xdf\xa3":
        return AudioKind("webm", "audio/webm")
    return None
