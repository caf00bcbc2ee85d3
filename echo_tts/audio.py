"""Reading audio: decode any reference clip to mono 44.1 kHz float32 (spec §4.1).

WAV, FLAC, OGG/Vorbis, AIFF and the other libsndfile formats are read with soundfile;
MP3, M4A/AAC, Opus, WebM and anything else FFmpeg knows are decoded with PyAV. Whatever
the source, the samples then go through the upstream steps in order: keep the first
``max_duration`` seconds, average the channels, resample to 44.1 kHz with
``torchaudio.functional.resample`` at its defaults, and divide by ``max(max|x|, 1.0)``
(attenuate only when the peak exceeds 1; no loudness normalisation).

Writing lives in :mod:`echo_tts.audio_encode` and is re-exported here.
"""

from __future__ import annotations

import io
import math
import os
from typing import BinaryIO

import av
import numpy as np
import soundfile as sf
import torch

from .audio_encode import (
    AUDIO_FORMATS,
    AudioFormat,
    encode_audio,
    encode_stream_chunk,
    join_segments,
    output_sample_rate,
    resample,
    trim_silence,
)
from .config import MAX_REFERENCE_SECONDS, SAMPLE_RATE
from .errors import InvalidAudio, InvalidInput

__all__ = [
    "AUDIO_FORMATS",
    "AudioFormat",
    "AudioSource",
    "encode_audio",
    "encode_stream_chunk",
    "join_segments",
    "load_audio",
    "output_sample_rate",
    "probe_duration",
    "resample",
    "trim_silence",
]

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

# libsndfile reads MP3 too (via mpg123, which writes warnings to stderr), but FFmpeg, what
# upstream's torchcodec uses, decodes MPEG audio here; MPEG files are recognised by their
# first bytes so libsndfile never opens them.
_PYAV_ONLY_SF_FORMATS = frozenset({"MP3"})


def load_audio(source: AudioSource, *, max_duration: float | None = MAX_REFERENCE_SECONDS) -> torch.Tensor:
    """Decode ``source`` (a path, the file's bytes, or a binary file object) to (1, N) float32 at 44.1 kHz.

    Only the first ``max_duration`` seconds are read (``None``: all of it). Raises
    :class:`InvalidAudio` when the source is missing, not audio, or decodes to no samples.
    """
    if max_duration is not None and not max_duration > 0:
        raise InvalidInput(f"max_duration must be > 0 seconds, got {max_duration}")
    channels, rate = _decode(source, max_duration)  # (C, n) float32 at the file's rate
    if channels.shape[1] == 0:
        raise InvalidAudio("the audio contains no samples")
    if not np.isfinite(channels).all():
        raise InvalidAudio("the audio contains NaN or infinite samples")
    mono = torch.from_numpy(np.ascontiguousarray(channels)).mean(dim=0, keepdim=True)  # (1, n)
    mono = resample(mono, rate, SAMPLE_RATE)  # (1, N)
    peak = float(mono.abs().max()) if mono.numel() else 0.0
    return (mono / max(peak, 1.0)).to(torch.float32).contiguous()


def probe_duration(source: AudioSource) -> float:
    """The duration of ``source`` in seconds from its header, decoding only when the header has none."""
    handle = _open_source(source)
    try:
        info = _soundfile_info(handle)
        if info is not None:
            return info
        _rewind(handle)
        with _open_container(handle) as container:
            stream = _audio_stream(container)
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / av.time_base
        _rewind(handle)
        channels, rate = _decode_pyav(handle, None)
        return channels.shape[1] / rate
    finally:
        _close(source, handle)


# --- sources ----------------------------------------------------------------------------------


def _open_source(source: AudioSource) -> str | BinaryIO:
    """A path string, or a seekable binary file object positioned at the start of the audio."""
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise InvalidAudio(f"audio file not found: {path}")
        return path
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise InvalidAudio("the audio is empty (0 bytes)")
        return io.BytesIO(bytes(source))
    if not hasattr(source, "read"):
        raise InvalidInput(f"audio source must be a path, bytes or a binary file object, got {type(source).__name__}")
    if _seekable(source):
        return _OffsetFile(source)
    data = source.read()
    if not isinstance(data, bytes | bytearray) or not data:
        raise InvalidAudio("the audio stream is empty or not binary")
    return io.BytesIO(bytes(data))


def _seekable(handle: BinaryIO) -> bool:
    try:
        return bool(handle.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class _OffsetFile:
    """Remembers where a caller's file object started so decoders can rewind to it."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.start = handle.tell()

    def rewind(self) -> None:
        self.handle.seek(self.start)


def _rewind(handle: str | BinaryIO | _OffsetFile) -> None:
    if isinstance(handle, _OffsetFile):
        handle.rewind()
    elif not isinstance(handle, str):
        handle.seek(0)


def _raw(handle: str | BinaryIO | _OffsetFile) -> str | BinaryIO:
    return handle.handle if isinstance(handle, _OffsetFile) else handle


def _close(source: AudioSource, handle: str | BinaryIO | _OffsetFile) -> None:
    if isinstance(handle, io.BytesIO) and handle is not source:
        handle.close()


# --- decoding ---------------------------------------------------------------------------------


def _decode(source: AudioSource, max_duration: float | None) -> tuple[np.ndarray, int]:
    handle = _open_source(source)
    try:
        decoded = _decode_soundfile(handle, max_duration)
        if decoded is not None:
            return decoded
        _rewind(handle)
        return _decode_pyav(handle, max_duration)
    finally:
        _close(source, handle)


def _limit(rate: int, max_duration: float | None) -> int | None:
    return None if max_duration is None else int(math.ceil(max_duration * rate - 1e-9))


def _looks_like_mpeg_audio(handle) -> bool:
    """ID3 tag or an MPEG/ADTS frame sync at the start: leave it to FFmpeg."""
    raw = _raw(handle)
    if isinstance(raw, str):
        with open(raw, "rb") as file:
            head = file.read(3)
    else:
        head = raw.read(3)
        _rewind(handle)
    return head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


def _decode_soundfile(handle, max_duration: float | None) -> tuple[np.ndarray, int] | None:
    """(C, n) float32 and the rate, or ``None`` when libsndfile can't (or shouldn't) read it."""
    if _looks_like_mpeg_audio(handle):
        return None
    try:
        with sf.SoundFile(_raw(handle)) as f:
            if f.format in _PYAV_ONLY_SF_FORMATS or f.samplerate <= 0:
                return None
            limit = _limit(f.samplerate, max_duration)
            frames = -1 if limit is None else limit
            data = f.read(frames=frames, dtype="float32", always_2d=True)  # (n, C)
            return data.T, int(f.samplerate)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError):
        return None


def _soundfile_info(handle) -> float | None:
    if _looks_like_mpeg_audio(handle):
        return None
    try:
        with sf.SoundFile(_raw(handle)) as f:
            if f.format in _PYAV_ONLY_SF_FORMATS or f.samplerate <= 0 or f.frames <= 0:
                return None
            return f.frames / f.samplerate
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError):
        return None


def _open_container(handle) -> av.container.InputContainer:
    try:
        return av.open(_raw(handle), mode="r")
    except (av.FFmpegError, OSError, ValueError, EOFError) as error:
        raise InvalidAudio(f"not a readable audio file ({_reason(error)})") from None


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise InvalidAudio(f"no audio stream found (container format {container.format.name!r})")
    return container.streams.audio[0]


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text)


def _decode_pyav(handle, max_duration: float | None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with FFmpeg to (C, n) float32 at its own rate."""
    with _open_container(handle) as container:
        stream = _audio_stream(container)
        chunks: list[np.ndarray] = []
        rate = 0
        total = 0
        limit: int | None = None
        converter = av.AudioResampler(format="fltp")  # keeps the rate and channel layout
        try:
            for frame in container.decode(stream):
                if not rate:
                    rate = int(frame.sample_rate)
                    limit = _limit(rate, max_duration)
                for planar in converter.resample(frame):
                    chunks.append(planar.to_ndarray())  # (C, n)
                    total += chunks[-1].shape[1]
                if limit is not None and total >= limit:
                    break
        except (av.FFmpegError, OSError, ValueError, EOFError) as error:
            if not chunks:
                raise InvalidAudio(f"could not decode audio ({_reason(error)})") from None
            # A damaged tail: keep what decoded cleanly, like a player would.
    if not chunks or rate <= 0:
        raise InvalidAudio("the audio stream decoded to no samples")
    channels = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if limit is not None:
        channels = channels[:, :limit]
    return channels, rate
