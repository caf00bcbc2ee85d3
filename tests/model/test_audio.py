"""Reading reference audio: echo_tts.audio.load_audio and probe_duration (spec §4.1)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from echo_tts.audio import encode_audio, load_audio, probe_duration
from echo_tts.config import SAMPLE_RATE
from echo_tts.errors import InvalidAudio, InvalidInput


def sine(seconds: float, rate: int = SAMPLE_RATE, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes(data: np.ndarray, rate: int, subtype: str = "FLOAT") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


class NonSeekable(io.RawIOBase):
    """A pipe-like stream: read() works, seek() does not."""

    def __init__(self, data: bytes):
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer) -> int:
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_a_44k_float_wav_is_returned_unchanged_as_one_row_of_float32():
    # Given a 44.1 kHz mono float WAV of a sine
    data = sine(1.0)
    # When it is loaded
    audio = load_audio(wav_bytes(data, SAMPLE_RATE))
    # Then it is (1, N) float32 and bit-identical to what was written
    assert audio.dtype == torch.float32 and audio.shape == (1, data.size)
    assert torch.equal(audio[0], torch.from_numpy(data))


def test_paths_bytes_and_file_objects_all_load_the_same(tmp_path):
    # Given the same FLAC as a path, a str path, bytes, a seekable file and a pipe
    data = sine(0.5)
    path = tmp_path / "ref.flac"
    sf.write(path, data, SAMPLE_RATE, subtype="PCM_16")
    raw = path.read_bytes()
    # When each is loaded
    results = [load_audio(path), load_audio(str(path)), load_audio(raw), load_audio(io.BytesIO(raw))]
    results.append(load_audio(io.BufferedReader(NonSeekable(raw))))
    # Then all agree
    for result in results[1:]:
        assert torch.equal(result, results[0])


def test_a_file_object_is_read_from_its_current_position():
    # Given a buffer where the WAV starts after a 7-byte prefix and the file pointer is there
    data = sine(0.2)
    buffer = io.BytesIO(b"garbage" + wav_bytes(data, SAMPLE_RATE))
    buffer.seek(7)
    # When it is loaded
    audio = load_audio(buffer)
    # Then the WAV is found
    assert audio.shape == (1, data.size)


def test_stereo_is_mixed_down_to_the_mean_of_the_channels():
    # Given a stereo file with different content per channel
    left, right = sine(0.5, freq=440.0, amp=0.4), sine(0.5, freq=660.0, amp=0.2)
    stereo = np.stack([left, right], axis=1)
    # When it is loaded
    audio = load_audio(wav_bytes(stereo, SAMPLE_RATE))
    # Then it is mono and equals the channel mean
    assert audio.shape == (1, left.size)
    torch.testing.assert_close(audio[0], torch.from_numpy((left + right) / 2), atol=1e-7, rtol=0)


@pytest.mark.parametrize("rate", [22_050, 48_000, 16_000])
def test_other_rates_are_resampled_with_torchaudio_defaults_to_the_right_length(rate):
    # Given one second of a 440 Hz sine at another rate
    data = sine(1.0, rate=rate)
    # When it is loaded
    audio = load_audio(wav_bytes(data, rate))
    # Then it is 44.1 kHz long and equals torchaudio's default resampler output
    assert audio.shape == (1, SAMPLE_RATE)
    expected = AF.resample(torch.from_numpy(data)[None], rate, SAMPLE_RATE)
    torch.testing.assert_close(audio, expected, atol=1e-6, rtol=0)


def test_a_peak_above_one_is_scaled_down_to_exactly_one():
    # Given float audio peaking at 2.5
    data = sine(0.3, amp=2.5)
    # When it is loaded
    audio = load_audio(wav_bytes(data, SAMPLE_RATE))
    # Then it is divided by its peak
    assert float(audio.abs().max()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(audio[0], torch.from_numpy(data / np.abs(data).max()), atol=1e-6, rtol=0)


def test_quiet_audio_is_not_normalised_up():
    # Given audio peaking at 0.1
    data = sine(0.3, amp=0.1)
    # When it is loaded
    audio = load_audio(wav_bytes(data, SAMPLE_RATE))
    # Then the level is unchanged
    assert float(audio.abs().max()) == pytest.approx(0.1, abs=1e-4)


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_only_the_first_max_duration_seconds_are_read(fmt):
    # Given three seconds of audio (read by soundfile for wav, by FFmpeg for mp3)
    blob = encode_audio(sine(3.0), SAMPLE_RATE, fmt)
    # When it is loaded with max_duration=1.25
    audio = load_audio(blob, max_duration=1.25)
    # Then exactly 1.25 s come back
    assert audio.shape == (1, int(1.25 * SAMPLE_RATE))


def test_max_duration_applies_at_the_file_rate_before_resampling():
    # Given two seconds at 48 kHz
    blob = wav_bytes(sine(2.0, rate=48_000), 48_000)
    # When the first second is loaded
    audio = load_audio(blob, max_duration=1.0)
    # Then one second at 44.1 kHz comes back
    assert audio.shape == (1, SAMPLE_RATE)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac"])
def test_compressed_formats_decode_to_mono_44k_of_about_the_right_length(fmt):
    # Given one second of sine encoded as fmt (opus is 48 kHz, so it is resampled back)
    blob = encode_audio(sine(1.0), SAMPLE_RATE, fmt)
    # When it is loaded
    audio = load_audio(blob)
    # Then it is about one second at 44.1 kHz, within codec delay/padding
    assert audio.shape[0] == 1
    assert abs(audio.shape[1] - SAMPLE_RATE) <= 2048
    assert 0.3 < float(audio.abs().max()) <= 1.0


@pytest.mark.parametrize(
    ("blob", "words"),
    [
        (b"", "empty"),
        (b"this is a plain text file, not audio\n" * 40, "not a readable audio file"),
        (np.random.default_rng(0).bytes(20_000), "not a readable audio file"),
        (wav_bytes(sine(0.5), SAMPLE_RATE)[:30], "not a readable audio file"),
    ],
    ids=["empty", "text", "random-bytes", "truncated-header"],
)
def test_bytes_that_are_not_audio_raise_invalid_audio_with_a_message(blob, words):
    # Given bytes that are not audio
    # When they are loaded
    with pytest.raises(InvalidAudio, match=words):
        load_audio(blob)
    # Then InvalidAudio (never a raw decoder error) names the problem


def test_a_wav_with_a_header_but_no_samples_raises_invalid_audio():
    # Given a valid WAV header with zero frames
    blob = wav_bytes(np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    # When it is loaded
    # Then InvalidAudio says there are no samples
    with pytest.raises(InvalidAudio, match="no samples"):
        load_audio(blob)


def test_a_missing_file_raises_invalid_audio_naming_it(tmp_path):
    # Given a path that does not exist
    missing = tmp_path / "nope.wav"
    # When it is loaded
    # Then InvalidAudio names the path
    with pytest.raises(InvalidAudio, match="nope.wav"):
        load_audio(missing)


def test_a_text_file_on_disk_raises_invalid_audio(tmp_path):
    # Given a text file with an audio extension
    path = tmp_path / "notes.mp3"
    path.write_text("hello, I am not an mp3\n" * 50)
    # When it is loaded
    # Then InvalidAudio is raised
    with pytest.raises(InvalidAudio):
        load_audio(path)


def test_nan_samples_raise_invalid_audio():
    # Given a float WAV containing NaN
    data = sine(0.2)
    data[100] = np.nan
    # When it is loaded
    # Then InvalidAudio names the problem
    with pytest.raises(InvalidAudio, match="NaN"):
        load_audio(wav_bytes(data, SAMPLE_RATE))


def test_bad_arguments_raise_invalid_input():
    # Given a non-audio source type and a non-positive duration
    # When they are passed
    # Then InvalidInput is raised
    with pytest.raises(InvalidInput, match="audio source"):
        load_audio(12345)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="max_duration"):
        load_audio(wav_bytes(sine(0.1), SAMPLE_RATE), max_duration=0)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "aac", "opus"])
def test_probe_duration_reads_the_length_from_the_header(fmt):
    # Given 2.5 s of audio in fmt
    blob = encode_audio(sine(2.5), SAMPLE_RATE, fmt)
    # When its duration is probed
    duration = probe_duration(blob)
    # Then it is 2.5 s within codec padding
    assert duration == pytest.approx(2.5, abs=0.06)


def test_probe_duration_of_garbage_raises_invalid_audio():
    # Given random bytes
    # When probed
    # Then InvalidAudio
    with pytest.raises(InvalidAudio):
        probe_duration(np.random.default_rng(1).bytes(5000))


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "aac"])
def test_a_file_cut_short_loads_what_is_there_quietly(fmt, capfd):
    # Given two seconds of audio with the second half of the file missing
    blob = encode_audio(sine(2.0), SAMPLE_RATE, fmt)
    # When it is loaded
    audio = load_audio(blob[: len(blob) // 2])
    # Then roughly the first second comes back and no decoder writes to stderr
    assert 0.5 * SAMPLE_RATE < audio.shape[1] < 1.5 * SAMPLE_RATE
    assert capfd.readouterr().err == ""
