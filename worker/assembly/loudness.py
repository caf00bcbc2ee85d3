"""Loudness normalisation for audiobook chapters: ACX RMS/peak targets or a LUFS target.

ACX (Audible) asks for each file: RMS between -23 and -18 dBFS and peaks at or below -3 dBFS.
:func:`normalize_for_acx` applies one gain to reach the middle of the RMS range (or, with
``target_lufs``, that BS.1770 integrated loudness measured by pyloudnorm), then a peak limiter
holds the peaks under the ceiling; in RMS mode the gain is chosen so that the RMS *after*
limiting lands in the middle. Lossy encoders can overshoot peaks by a fraction of
a dB after decoding: pass a lower ``peak_dbfs`` to leave headroom for that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyloudnorm

from echo_tts.errors import InvalidAudio, InvalidInput

__all__ = ["ACX_PEAK_DBFS", "ACX_RMS_RANGE_DBFS", "LoudnessReport", "measure", "normalize_for_acx"]

ACX_RMS_RANGE_DBFS = (-23.0, -18.0)  # ACX audio submission requirements
ACX_PEAK_DBFS = -3.0  # ACX: peak values no higher than -3 dBFS
MIN_LOUDNESS_S = 0.4  # one BS.1770 gating block; pyloudnorm refuses anything shorter
SILENCE_DBFS = -100.0  # below this RMS the input is treated as silence and left unchanged
LIMITER_BLOCK_S = 0.005  # limiter resolution: gain changes ramp over 5 ms blocks
LIMITER_SPREAD = 4  # a block's gain reduction also covers 4 blocks (20 ms) each side: no pumping per cycle
MAX_RMS_ROUNDS = 6  # gain/limit rounds to land the limited RMS on target (the secant needs 2-4)
MAX_EXTRA_GAIN_DB = 12.0  # at most this much gain above the plain RMS gain to make up for limiting
RMS_TOLERANCE_DB = 0.25  # close enough to the middle of a 5 dB wide range
_CHUNK = 1 << 20  # samples per chunk when summing squares in float64
_CEILING_SAFETY = 1.0 - 1e-6  # keeps float32 rounding of limited samples under the ceiling


@dataclass(frozen=True)
class LoudnessReport:
    """Levels of the returned samples and what was done.

    ``gain_db`` is the total gain applied before limiting, ``limiter_db`` the deepest peak
    reduction (<= 0), ``lufs`` the integrated loudness (``None`` when the audio is shorter
    than 0.4 s or silent by the BS.1770 gate). ``reason`` is set only when the samples were
    returned unchanged, and says why (silence, too short for a LUFS target).
    """

    rms_dbfs: float
    peak_dbfs: float
    lufs: float | None
    gain_db: float
    limiter_db: float = 0.0
    reason: str | None = None

    def within_acx(self) -> bool:
        """True when the RMS is within -23..-18 dBFS and the peak is at most -3 dBFS."""
        low, high = ACX_RMS_RANGE_DBFS
        return low <= self.rms_dbfs <= high and self.peak_dbfs <= ACX_PEAK_DBFS


def _db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else -math.inf


def _rms(samples: np.ndarray) -> float:
    total = 0.0
    for start in range(0, samples.size, _CHUNK):
        chunk = samples[start : start + _CHUNK].astype(np.float64)
        total += float(np.dot(chunk, chunk))
    return math.sqrt(total / samples.size) if samples.size else 0.0


def _lufs(samples: np.ndarray, sample_rate: int) -> float | None:
    if samples.size < MIN_LOUDNESS_S * sample_rate:
        return None
    value = float(pyloudnorm.Meter(sample_rate).integrated_loudness(samples))
    return value if math.isfinite(value) else None


def measure(samples: np.ndarray, sample_rate: int) -> LoudnessReport:
    """RMS, peak (dBFS) and integrated loudness (LUFS or ``None``) of mono samples, unchanged."""
    array = _as_mono(samples)
    peak = float(np.max(np.abs(array))) if array.size else 0.0
    return LoudnessReport(_db(_rms(array)), _db(peak), _lufs(array, sample_rate), 0.0)


def _as_mono(samples: np.ndarray) -> np.ndarray:
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim != 1:
        raise InvalidAudio(f"expected mono samples of shape (N,), got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise InvalidAudio("samples contain NaN or infinite values")
    return array


def _limit(samples: np.ndarray, ceiling: float, block: int) -> float:
    """Scale blocks in place so no |sample| exceeds ``ceiling``; returns the deepest reduction in dB.

    Each block needs gain ``min(1, ceiling / block_peak)``; that need is spread over the
    neighbouring blocks, and the gain ramps linearly between block edges, each edge taking the
    smaller need of the two blocks it joins, so every sample gets at most its block's need.
    """
    count = -(-samples.size // block)
    padded = np.zeros(count * block, dtype=np.float32)
    padded[: samples.size] = np.abs(samples)
    peaks = padded.reshape(count, block).max(axis=1).astype(np.float64)
    need = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
    if need.min() >= 1.0:
        return 0.0
    window = 2 * LIMITER_SPREAD + 1
    spread = np.lib.stride_tricks.sliding_window_view(np.pad(need, LIMITER_SPREAD, constant_values=1.0), window)
    need = spread.min(axis=1)
    edges = np.ones(count + 1)
    edges[:-1] = need
    edges[1:] = np.minimum(edges[1:], need)
    ramp = np.arange(block, dtype=np.float64) / block
    for index in np.flatnonzero(np.minimum(edges[:-1], edges[1:]) < 1.0).tolist():
        start: int = index * block
        stop: int = min(start + block, int(samples.size))
        gain = edges[index] + (edges[index + 1] - edges[index]) * ramp[: stop - start]
        samples[start:stop] = (samples[start:stop] * gain).astype(np.float32)
    return _db(float(need.min()))


def _check_targets(rms_range_dbfs: tuple[float, float], peak_dbfs: float, target_lufs: float | None) -> None:
    low, high = rms_range_dbfs
    if not -60.0 <= low <= high <= 0.0:
        raise InvalidInput(f"rms_range_dbfs must be (low, high) within -60..0 dBFS with low <= high, got {low, high}")
    if not -30.0 <= peak_dbfs <= 0.0:
        raise InvalidInput(f"peak_dbfs must be within -30..0 dBFS, got {peak_dbfs}")
    if target_lufs is not None and not -60.0 <= target_lufs <= 0.0:
        raise InvalidInput(f"target_lufs must be within -60..0 LUFS, got {target_lufs}")


def _gain_and_limit(samples: np.ndarray, gain_db: float, ceiling: float, block: int) -> tuple[np.ndarray, float]:
    out = samples * np.float32(10.0 ** (gain_db / 20.0))
    return out, _limit(out, ceiling, block)


def _reach_rms(
    samples: np.ndarray, target_dbfs: float, gain_db: float, ceiling: float, block: int
) -> tuple[np.ndarray, float, float]:
    """Find the gain whose limited output has ``target_dbfs`` RMS: ``(samples, gain_db, limiter_db)``.

    Limiting only lowers the RMS and the limited RMS rises with the gain, so a secant search
    from the plain gain converges in a few rounds; the gain never goes more than
    ``MAX_EXTRA_GAIN_DB`` above the plain gain (a signal that is all peaks stays below range).
    """
    low, high = gain_db, gain_db + MAX_EXTRA_GAIN_DB
    best: tuple[float, np.ndarray, float, float] | None = None  # (miss dB, samples, gain dB, limiter dB)
    previous: tuple[float, float] | None = None  # (gain dB, rms dBFS)
    for _ in range(MAX_RMS_ROUNDS):
        out, limiter_db = _gain_and_limit(samples, gain_db, ceiling, block)
        rms = _db(_rms(out))
        if best is None or abs(target_dbfs - rms) < best[0]:
            best = (abs(target_dbfs - rms), out, gain_db, limiter_db)
        if abs(target_dbfs - rms) <= RMS_TOLERANCE_DB:
            break
        slope = 1.0 if previous is None else max((rms - previous[1]) / (gain_db - previous[0]), 1e-3)
        previous = (gain_db, rms)
        gain_db = min(max(gain_db + (target_dbfs - rms) / slope, low), high)
        if gain_db == previous[0]:
            break
    assert best is not None  # MAX_RMS_ROUNDS >= 1
    return best[1], best[2], best[3]


def normalize_for_acx(
    samples: np.ndarray,
    sample_rate: int,
    *,
    target_lufs: float | None = None,
    rms_range_dbfs: tuple[float, float] = ACX_RMS_RANGE_DBFS,
    peak_dbfs: float = ACX_PEAK_DBFS,
) -> tuple[np.ndarray, LoudnessReport]:
    """Normalise mono float samples (N,); returns ``(new float32 samples, LoudnessReport)``.

    Without ``target_lufs``: the gain that puts the RMS in the middle of ``rms_range_dbfs``
    (-20.5 dBFS for ACX) *after* limiting the peaks to ``peak_dbfs`` (found in a few rounds).
    With ``target_lufs``: gain to that integrated loudness (pyloudnorm, BS.1770-4), then the
    same peak ceiling. Silent input, and input shorter than 0.4 s with ``target_lufs``, come
    back unchanged (a copy) with ``report.reason`` saying why; silence or short audio never
    raises. The input array is not modified.
    """
    _check_targets(rms_range_dbfs, peak_dbfs, target_lufs)
    if sample_rate <= 0:
        raise InvalidInput(f"sample_rate must be positive, got {sample_rate}")
    array = _as_mono(samples)
    before = measure(array, sample_rate)
    if before.rms_dbfs < SILENCE_DBFS:
        return array.copy(), _unchanged(before, f"silent (RMS below {SILENCE_DBFS:g} dBFS)")
    ceiling = 10.0 ** (peak_dbfs / 20.0) * _CEILING_SAFETY
    block = max(int(round(LIMITER_BLOCK_S * sample_rate)), 1)
    if target_lufs is None:
        target_rms = (rms_range_dbfs[0] + rms_range_dbfs[1]) / 2.0
        out, gain_db, limiter_db = _reach_rms(array, target_rms, target_rms - before.rms_dbfs, ceiling, block)
    elif array.size < MIN_LOUDNESS_S * sample_rate:
        return array.copy(), _unchanged(before, f"shorter than {MIN_LOUDNESS_S:g} s: no integrated loudness")
    elif before.lufs is None:
        return array.copy(), _unchanged(before, "below the -70 LUFS gate of BS.1770: no integrated loudness")
    else:
        gain_db = target_lufs - before.lufs
        out, limiter_db = _gain_and_limit(array, gain_db, ceiling, block)
    after = measure(out, sample_rate)
    return out, LoudnessReport(after.rms_dbfs, after.peak_dbfs, after.lufs, gain_db, limiter_db)


def _unchanged(levels: LoudnessReport, reason: str) -> LoudnessReport:
    return LoudnessReport(levels.rms_dbfs, levels.peak_dbfs, levels.lufs, 0.0, 0.0, reason)
