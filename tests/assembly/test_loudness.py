"""normalize_for_acx: ACX RMS/peak targets, a LUFS target, and silence or short audio."""

from __future__ import annotations

import numpy as np
import pytest

from worker.assembly import LoudnessReport, measure, normalize_for_acx

RATE = 44_100


def speechlike(seconds: float, level: float, seed: int) -> np.ndarray:
    """Voiced syllables (a 140 Hz harmonic series under a 2.5 Hz envelope) with plosive-like
    noise bursts 6x louder: a crest factor near 30 dB, so -20 dBFS RMS needs the limiter."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    phase = 2 * np.pi * np.cumsum(140.0 * (1.0 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) / RATE
    voiced = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 21))
    signal = voiced * np.clip(np.sin(2 * np.pi * 2.5 * t), 0.0, None) ** 1.5
    burst = int(0.004 * RATE)
    decay = np.exp(-np.arange(burst) / (burst / 4))
    for start in rng.choice(n - burst, size=int(seconds * 3), replace=False):
        signal[start : start + burst] += 6.0 * rng.standard_normal(burst) * decay
    return (signal * level / np.max(np.abs(signal))).astype(np.float32)


def dbfs(value: float) -> float:
    return 20.0 * np.log10(value)


@pytest.mark.parametrize(("name", "peak"), [("loud", 1.0), ("quiet", 0.01)])
def test_acx_normalisation_puts_rms_in_range_and_peaks_at_or_below_minus_3_dbfs(name, peak):
    # Given a loud (0 dBFS peak) or quiet (-40 dBFS peak) speech-like signal
    samples = speechlike(3.0, peak, seed=len(name))
    # When it is normalised for ACX
    out, report = normalize_for_acx(samples, RATE)
    # Then the RMS is within -23..-18 dBFS and the peak at most -3 dBFS, measured on the output
    rms = dbfs(np.sqrt(np.mean(out.astype(np.float64) ** 2)))
    assert -23.0 <= rms <= -18.0 and dbfs(np.max(np.abs(out))) <= -3.0
    assert report.within_acx() and report.rms_dbfs == pytest.approx(rms, abs=1e-3)
    # And the limiter had to work, and the input was not modified
    assert report.limiter_db < 0.0 and report.reason is None
    assert out.dtype == np.float32 and out.shape == samples.shape
    assert not np.shares_memory(out, samples)


def test_clicks_in_a_quiet_room_keep_the_peak_ceiling_and_are_reported_outside_acx():
    # Given -60 dBFS noise with a few full-scale clicks (nearly all the energy is in the clicks)
    rng = np.random.default_rng(7)
    samples = (0.001 * rng.standard_normal(2 * RATE)).astype(np.float32)
    samples[rng.choice(samples.size, 8, replace=False)] = 0.9
    # When it is normalised for ACX
    out, report = normalize_for_acx(samples, RATE)
    # Then the peak ceiling holds, and the report says the RMS could not reach the range (the
    # gain stops 12 dB above the plain RMS gain rather than raise the noise further)
    assert dbfs(np.max(np.abs(out))) <= -3.0 and report.peak_dbfs <= -3.0
    assert report.rms_dbfs < -23.0 and not report.within_acx()


def test_a_lufs_target_is_met_and_the_peak_ceiling_still_holds():
    # Given a tone with some noise (a low crest factor, so the limiter barely acts)
    rng = np.random.default_rng(3)
    t = np.arange(2 * RATE) / RATE
    samples = (0.05 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    # When it is normalised to -19 LUFS
    out, report = normalize_for_acx(samples, RATE, target_lufs=-19.0)
    # Then pyloudnorm measures -19 LUFS on the result and the peak stays under -3 dBFS
    assert report.lufs == pytest.approx(-19.0, abs=0.1)
    assert measure(out, RATE).lufs == pytest.approx(-19.0, abs=0.1)
    assert report.peak_dbfs <= -3.0


@pytest.mark.parametrize(
    ("samples", "target_lufs", "reason"),
    [
        (np.zeros(RATE, dtype=np.float32), None, "silent"),
        (np.zeros(RATE, dtype=np.float32), -20.0, "silent"),
        (np.full(1000, 0.1, dtype=np.float32), -20.0, "shorter than 0.4 s"),
        (np.zeros(0, dtype=np.float32), None, "silent"),
    ],
)
def test_silence_and_too_short_audio_come_back_unchanged_with_a_reason(samples, target_lufs, reason):
    # Given silence, or audio too short for a BS.1770 block / When normalised
    out, report = normalize_for_acx(samples, RATE, target_lufs=target_lufs)
    # Then the samples are unchanged and the report says why
    assert np.array_equal(out, samples) and report.gain_db == 0.0
    assert report.reason is not None and reason in report.reason


def test_short_audio_is_still_rms_normalised_without_a_lufs_value():
    # Given 0.1 s of tone (too short for LUFS, fine for RMS)
    t = np.arange(RATE // 10) / RATE
    samples = (0.01 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    # When normalised for ACX
    _, report = normalize_for_acx(samples, RATE)
    # Then it reaches the middle of the range, and LUFS is reported as unknown
    assert report.rms_dbfs == pytest.approx(-20.5, abs=0.01) and report.lufs is None
    assert isinstance(report, LoudnessReport)
