"""Writing audio: output formats, encoding to bytes, and stitching rendered pieces.

Formats (``AUDIO_FORMATS``):

- ``wav``  16-bit PCM RIFF/WAVE (soundfile).
- ``flac`` 16-bit FLAC (soundfile).
- ``mp3``  MPEG-1/2 Layer III via libmp3lame, 128 kbit/s mono (PyAV).
- ``opus`` Ogg Opus via libopus, 64 kbit/s mono. Opus always plays back at 48 kHz (decoders
  output 48 kHz whatever rate went in), so it is **always encoded at 48 kHz**: the samples
  are resampled to 48 kHz and ``out_sample_rate`` is ignored. ``output_sample_rate`` tells
  callers which rate a format really gets.
- ``aac``  AAC-LC in an **M4A** (MP4, ``audio/mp4``) container with the ``moov`` atom at
  the front (``+faststart``), 128 kbit/s mono. M4A, not raw ADTS, because it carries the
  duration and a seek index, which browsers and players need to show a timeline and seek
  when they stream the file from a presigned URL; raw ADTS has neither.
- ``pcm``  raw signed 16-bit little-endian mono samples, no header, at the output rate.

Every encoder clips the samples to [-1, 1] first. Lossy codecs add encoder delay and
padding, so their decoded length differs from the input by up to a few thousand samples.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .config import DEFAULT_PAUSE_S
from .errors import InvalidAudio, InvalidInput, UnsupportedFormat

__all__ = [
    "AUDIO_FORMATS",
    "AudioFormat",
    "encode_audio",
    "encode_stream_chunk",
    "join_segments",
    "output_sample_rate",
    "resample",
    "trim_silence",
]

_MIN_RATE, _MAX_RATE = 8_000, 192_000
OPUS_SAMPLE_RATE = 48_000
MP3_BIT_RATE = 128_000
AAC_BIT_RATE = 128_000
OPUS_BIT_RATE = 64_000


@dataclass(frozen=True)
class AudioFormat:
    """An output format: its name, file extension (without dot) and HTTP Content-Type.

    ``sample_rates`` lists the rates the codec accepts (``None``: any rate).
    """

    name: str
    extension: str
    content_type: str
    sample_rates: tuple[int, ...] | None = None


_LAME_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)

AUDIO_FORMATS: dict[str, AudioFormat] = {
    "wav": AudioFormat("wav", "wav", "audio/wav"),
    "flac": AudioFormat("flac", "flac", "audio/flac"),
    "mp3": AudioFormat("mp3", "mp3", "audio/mpeg", _LAME_RATES),
    "opus": AudioFormat("opus", "opus", "audio/ogg; codecs=opus", (OPUS_SAMPLE_RATE,)),
    "aac": AudioFormat("aac", "m4a", "audio/mp4", _AAC_RATES),
    "pcm": AudioFormat("pcm", "pcm", "audio/L16"),
}


def _audio_format(fmt: str) -> AudioFormat:
    try:
        return AUDIO_FORMATS[fmt]
    except (KeyError, TypeError):
        valid = ", ".join(AUDIO_FORMATS)
        raise UnsupportedFormat(f"unsupported audio format {fmt!r}; valid formats: {valid}") from None


def output_sample_rate(fmt: str, sample_rate: int, out_sample_rate: int | None = None) -> int:
    """The sample rate ``encode_audio(…, fmt, out_sample_rate=…)`` writes.

    ``out_sample_rate`` or else ``sample_rate``; always 48 kHz for opus. Raises
    :class:`UnsupportedFormat` for a rate the codec cannot take (e.g. mp3 at 96 kHz) and
    :class:`InvalidInput` for a rate outside 8–192 kHz.
    """
    spec = _audio_format(fmt)
    rate = int(out_sample_rate if out_sample_rate is not None else sample_rate)
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise InvalidInput(f"sample rate must be within {_MIN_RATE}-{_MAX_RATE} Hz, got {rate}")
    if fmt == "opus":
        return OPUS_SAMPLE_RATE
    if spec.sample_rates is not None and rate not in spec.sample_rates:
        valid = ", ".join(str(r) for r in spec.sample_rates)
        raise UnsupportedFormat(f"{fmt} cannot be written at {rate} Hz; valid rates: {valid}")
    return rate


def resample(samples: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """``torchaudio.functional.resample`` at its defaults; identity when the rates match.

    torchaudio builds one filter per output phase: ``new/gcd × (orig/gcd + 2·width)`` taps, which for
    coprime rates (44100 → 44101) is billions of floats. Past :data:`MAX_KERNEL_TAPS` the same
    windowed-sinc filter is evaluated per output sample instead (:func:`_resample_direct`): memory
    bounded by a chunk, time linear in the longer of input and output.
    """
    orig, new = int(orig_freq), int(new_freq)
    if orig == new:
        return samples
    if orig <= 0 or new <= 0:
        raise InvalidInput(f"sample rates must be positive, got {orig} -> {new}")
    if _kernel_taps(orig, new) <= MAX_KERNEL_TAPS:
        return AF.resample(samples, orig, new)
    return _resample_direct(samples, orig, new)


# torchaudio's defaults (lowpass_filter_width=6, rolloff=0.99, sinc_interp_hann), evaluated directly
_ZERO_CROSSINGS, _ROLLOFF = 6, 0.99
MAX_KERNEL_TAPS = 1 << 20  # torchaudio's table above this (4 MiB of float32): every standard pair is far below
_CHUNK_TAPS = 1 << 21  # output samples x filter taps evaluated at a time by _resample_direct


def _reduced(orig: int, new: int) -> tuple[int, int, float, int]:
    """(orig/gcd, new/gcd, cutoff, half-width in input samples) as torchaudio computes them."""
    gcd = math.gcd(orig, new)
    o, n = orig // gcd, new // gcd
    base = min(o, n) * _ROLLOFF
    return o, n, base, math.ceil(_ZERO_CROSSINGS * o / base)


def _kernel_taps(orig: int, new: int) -> int:
    """How many filter taps ``torchaudio.functional.resample`` would hold in memory at once."""
    o, n, _, width = _reduced(orig, new)
    return n * (o + 2 * width)


def _resample_direct(samples: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """torchaudio's filter, evaluated per output sample over the ``2·width + 2`` inputs around it."""
    o, n, base, width = _reduced(orig, new)
    length = samples.shape[-1]
    out_len = math.ceil(n * length / o)
    flat = samples.reshape(-1, length).to(torch.float32)  # (B, N)
    padded = torch.nn.functional.pad(flat, (width + 1, width + 1))  # zeros past both ends, as torchaudio
    offsets = torch.arange(-width, width + 2, device=samples.device)  # (T,) around floor(j·o/n)
    out = torch.empty(flat.shape[0], out_len, dtype=torch.float32, device=samples.device)  # (B, M)
    chunk = max(1, _CHUNK_TAPS // offsets.numel())
    for start in range(0, out_len, chunk):
        j = torch.arange(start, min(start + chunk, out_len), device=samples.device)  # (J,) output indices
        i = (j * o).div(n, rounding_mode="floor")[:, None] + offsets  # (J, T) input indices
        # i/o - j/n as an exact integer over o·n (no float error for long inputs), then in zero crossings
        t = ((i * n - (j * o)[:, None]).to(torch.float32) * (base / (o * n))).clamp_(-_ZERO_CROSSINGS, _ZERO_CROSSINGS)
        window = torch.cos(t * (math.pi / _ZERO_CROSSINGS / 2)).square_()  # (J, T) Hann
        t.mul_(math.pi)
        taps = torch.where(t == 0, 1.0, torch.sin(t) / t).mul_(window).mul_(base / o)  # (J, T)
        out[:, start : start + j.numel()] = (padded[:, i + width + 1] * taps).sum(-1)  # (B, J)
    return out.to(samples.dtype).reshape(*samples.shape[:-1], out_len)


def _as_mono_float32(samples: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1:
        raise InvalidAudio(f"expected mono samples of shape (N,) or (1, N), got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise InvalidAudio("samples contain NaN or infinite values")
    return array


def encode_audio(
    samples: np.ndarray | torch.Tensor,
    sample_rate: int,
    fmt: str,
    *,
    out_sample_rate: int | None = None,
) -> bytes:
    """Encode mono float samples (N,) at ``sample_rate`` to the bytes of a ``fmt`` file.

    The samples are resampled to :func:`output_sample_rate` (torchaudio defaults) when that
    differs from ``sample_rate``, clipped to [-1, 1], and written as the module docstring
    describes. Unknown ``fmt``: :class:`UnsupportedFormat` naming the valid ones; empty or
    non-finite samples: :class:`InvalidAudio`.
    """
    rate = output_sample_rate(fmt, sample_rate, out_sample_rate)
    array = _as_mono_float32(samples)
    if int(sample_rate) <= 0:
        raise InvalidInput(f"sample_rate must be positive, got {sample_rate}")
    if array.size == 0:
        raise InvalidAudio("no samples to encode (0 samples)")
    if rate != int(sample_rate):
        array = resample(torch.from_numpy(array), int(sample_rate), rate).numpy()
    array = np.clip(array, -1.0, 1.0).astype(np.float32, copy=False)
    if fmt in ("wav", "flac"):
        buffer = io.BytesIO()
        sf.write(buffer, array, rate, format=fmt.upper(), subtype="PCM_16")
        return buffer.getvalue()
    if fmt == "pcm":
        return np.round(array * 32767.0).astype("<i2").tobytes()
    if fmt == "mp3":
        return _encode_pyav(array, rate, container="mp3", codec="libmp3lame", bit_rate=MP3_BIT_RATE)
    if fmt == "opus":
        return _encode_pyav(array, rate, container="ogg", codec="libopus", bit_rate=OPUS_BIT_RATE)
    return _encode_m4a(array, rate)


def encode_stream_chunk(
    samples: np.ndarray | torch.Tensor,
    sample_rate: int,
    fmt: str,
    *,
    out_sample_rate: int | None = None,
) -> bytes:
    """One chunk of a track sent while it is rendered: bytes that simply follow the previous chunk's.

    ``pcm`` and ``wav``: 16-bit little-endian samples, each converted as that format's file converts
    them (a streamed wav is one header, then these; the header is the receiver's job). ``mp3``: bare
    MPEG frames, without the ID3 tag and Xing header a file starts with, so concatenated chunks decode
    as one stream (each chunk adds the encoder's padding, under 0.1 s, which falls in the pause between
    pieces). Resampled and clipped as :func:`encode_audio`
    does; an empty chunk is ``b""``. Other formats cannot be cut this way: :class:`UnsupportedFormat`.
    """
    if fmt not in ("pcm", "wav", "mp3"):
        raise UnsupportedFormat(f"{fmt} cannot be streamed; streamable formats: pcm, wav, mp3")
    rate = output_sample_rate(fmt, sample_rate, out_sample_rate)
    array = _as_mono_float32(samples)
    if array.size == 0:
        return b""
    if rate != int(sample_rate):
        array = resample(torch.from_numpy(array), int(sample_rate), rate).numpy()
    array = np.clip(array, -1.0, 1.0).astype(np.float32, copy=False)
    if fmt == "mp3":
        buffer = io.BytesIO()
        with av.open(buffer, mode="w", format="mp3", options={"write_xing": "0", "id3v2_version": "0"}) as out:
            _write_stream(out, array, rate, "libmp3lame", MP3_BIT_RATE)
        return buffer.getvalue()
    if fmt == "wav":  # libsndfile's own float -> 16-bit conversion, so the samples equal the wav file's
        buffer = io.BytesIO()
        sf.write(buffer, array, rate, format="RAW", subtype="PCM_16", endian="LITTLE")
        return buffer.getvalue()
    return np.round(array * 32767.0).astype("<i2").tobytes()


def _write_stream(
    container: av.container.OutputContainer, array: np.ndarray, rate: int, codec: str, bit_rate: int
) -> None:
    stream = container.add_stream(codec, rate=rate, layout="mono")
    stream.bit_rate = bit_rate
    frame = av.AudioFrame.from_ndarray(array[None, :], format="flt", layout="mono")
    frame.sample_rate = rate
    frame.pts = 0
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _encode_pyav(array: np.ndarray, rate: int, *, container: str, codec: str, bit_rate: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        _write_stream(out, array, rate, codec, bit_rate)
    return buffer.getvalue()


def _encode_m4a(array: np.ndarray, rate: int) -> bytes:
    # +faststart rewrites the file to move `moov` to the front, which needs a real file.
    with tempfile.TemporaryDirectory(prefix="echo-tts-m4a-") as tmp:
        path = os.path.join(tmp, "audio.m4a")
        with av.open(path, mode="w", format="ipod", options={"movflags": "+faststart"}) as out:
            _write_stream(out, array, rate, "aac", AAC_BIT_RATE)
        with open(path, "rb") as handle:
            return handle.read()


def _fade(segment: np.ndarray, fade_len: int) -> np.ndarray:
    n = min(fade_len, segment.size // 2)
    if n <= 0:
        return segment
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n + 2, dtype=np.float64)[1:-1])).astype(np.float32)
    out = segment.copy()
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def join_segments(
    segments: Sequence[np.ndarray | torch.Tensor],
    sample_rate: int,
    *,
    pause_s: float | Sequence[float] = DEFAULT_PAUSE_S,
    fade_s: float = 0.01,
) -> np.ndarray:
    """Stitch rendered pieces into one (N,) float32 track with silence between them.

    Each piece gets a raised-cosine fade-in and fade-out of ``fade_s`` (at most half its
    length) so no edge clicks, and ``pause_s`` seconds of exact silence go between pieces
    (a float, or one value per gap, e.g. longer pauses at paragraph ends). Empty pieces
    (a render cropped to nothing) are dropped with their gap. The result is
    ``sum(len(piece)) + sum(round(pause * sample_rate))`` samples long; nothing is trimmed
    here (see :func:`trim_silence`).
    """
    pieces = [_as_mono_float32(s) for s in segments]
    if isinstance(pause_s, int | float):
        pauses = [float(pause_s)] * max(len(pieces) - 1, 0)
    else:
        pauses = [float(p) for p in pause_s]
        if len(pauses) != max(len(pieces) - 1, 0):
            raise InvalidInput(f"pause_s has {len(pauses)} values for {len(pieces)} segments (needs one per gap)")
    if any(p < 0 for p in pauses) or fade_s < 0:
        raise InvalidInput("pause_s and fade_s must be >= 0")
    fade_len = int(round(fade_s * sample_rate))
    out: list[np.ndarray] = []
    gap_after_previous = 0
    for index, piece in enumerate(pieces):
        if piece.size == 0:
            continue
        if out:
            out.append(np.zeros(gap_after_previous, dtype=np.float32))
        out.append(_fade(piece, fade_len))
        gap_after_previous = int(round(pauses[index] * sample_rate)) if index < len(pauses) else 0
    if not out:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def trim_silence(
    samples: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    threshold_db: float = -50.0,
    keep_s: float = 0.05,
) -> np.ndarray:
    """Cut leading and trailing near-silence, keeping ``keep_s`` seconds of margin.

    A sample counts as sound when ``|x|`` exceeds ``threshold_db`` dBFS. All-silent input
    gives an empty array. Not applied by :func:`join_segments`; the assembler chooses.
    """
    array = _as_mono_float32(samples)
    loud = np.flatnonzero(np.abs(array) > 10.0 ** (threshold_db / 20.0))
    if loud.size == 0:
        return np.zeros(0, dtype=np.float32)
    keep = int(round(keep_s * sample_rate))
    start = max(int(loud[0]) - keep, 0)
    stop = min(int(loud[-1]) + 1 + keep, array.size)
    return array[start:stop].copy()
