"""Writing audio: encode_audio per format, output rates, AUDIO_FORMATS, join_segments, trim_silence."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from echo_tts.audio import (
    AUDIO_FORMATS,
    encode_audio,
    encode_stream_chunk,
    join_segments,
    output_sample_rate,
    trim_silence,
)
from echo_tts.errors import InvalidAudio, InvalidInput, UnsupportedFormat

RATE = 44_100
CODECS = {"mp3": "mp3", "opus": "opus", "aac": "aac", "flac": "flac", "wav": "pcm_s16le"}
CONTAINERS = {"mp3": "mp3", "opus": "ogg", "aac": "mp4", "flac": "flac", "wav": "wav"}


def sine(seconds: float, rate: int = RATE, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def pyav_decode(blob: bytes) -> tuple[str, str, int, int, int]:
    """(container, codec, sample rate, channels, samples) as FFmpeg sees the file."""
    with av.open(io.BytesIO(blob)) as container:
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
        return (
            container.format.name,
            stream.codec_context.name,
            frames[0].sample_rate,
            len(frames[0].layout.channels),
            sum(f.samples for f in frames),
        )


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "aac"])
def test_each_format_round_trips_as_mono_at_the_expected_rate_and_length(fmt):
    # Given one second of sine at 44.1 kHz
    data = sine(1.0)
    # When it is encoded
    blob = encode_audio(data, RATE, fmt)
    # Then FFmpeg decodes it as mono, with the right codec, rate, and about one second of samples
    container, codec, rate, channels, samples = pyav_decode(blob)
    assert CONTAINERS[fmt] in container.split(",") and codec.startswith(CODECS[fmt]) and channels == 1
    assert rate == (48_000 if fmt == "opus" else RATE)
    assert abs(samples - rate) <= 2048


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_lossless_formats_are_16_bit_and_sample_exact_to_16_bit_precision(fmt):
    # Given a sine
    data = sine(0.5)
    # When it is written as wav/flac and read back with soundfile
    decoded, rate = sf.read(io.BytesIO(encode_audio(data, RATE, fmt)), dtype="float32")
    info = sf.info(io.BytesIO(encode_audio(data, RATE, fmt)))
    # Then it is PCM_16 at 44.1 kHz and within one 16-bit step of the input
    assert info.subtype == "PCM_16" and rate == RATE
    assert decoded.shape == data.shape
    np.testing.assert_allclose(decoded, data, atol=1.0 / 32767)


def test_pcm_is_raw_signed_16_bit_little_endian_mono():
    # Given three known samples
    data = np.array([0.0, 1.0, -1.0, 0.5], dtype=np.float32)
    # When encoded as pcm
    blob = encode_audio(data, RATE, "pcm")
    # Then it is exactly the int16 little-endian values, no header
    assert blob == np.array([0, 32767, -32767, 16384], dtype="<i2").tobytes()


def test_samples_beyond_full_scale_are_clipped():
    # Given samples at +-3
    data = np.array([3.0, -3.0, 0.25], dtype=np.float32)
    # When encoded as pcm
    values = np.frombuffer(encode_audio(data, RATE, "pcm"), dtype="<i2")
    # Then they are clipped to full scale
    assert values.tolist() == [32767, -32767, 8192]


@pytest.mark.parametrize(("fmt", "out_rate"), [("wav", 22_050), ("flac", 16_000), ("mp3", 24_000), ("aac", 48_000)])
def test_out_sample_rate_resamples_the_output(fmt, out_rate):
    # Given one second at 44.1 kHz
    data = sine(1.0)
    # When it is encoded at another output rate
    blob = encode_audio(data, RATE, fmt, out_sample_rate=out_rate)
    # Then the file has that rate and still lasts about one second
    _, _, rate, _, samples = pyav_decode(blob)
    assert rate == out_rate == output_sample_rate(fmt, RATE, out_rate)
    assert abs(samples - out_rate) <= 2048


def test_pcm_at_another_rate_has_the_resampled_sample_count():
    # Given one second at 44.1 kHz
    # When encoded as pcm at 16 kHz
    blob = encode_audio(sine(1.0), RATE, "pcm", out_sample_rate=16_000)
    # Then there are 16,000 two-byte samples
    assert len(blob) == 2 * 16_000


def test_opus_is_always_48k_whatever_rate_is_asked():
    # Given a request for opus at 24 kHz
    # When the output rate is resolved and the audio is encoded
    blob = encode_audio(sine(0.5), RATE, "opus", out_sample_rate=24_000)
    # Then both say 48 kHz
    assert output_sample_rate("opus", RATE, 24_000) == 48_000
    assert pyav_decode(blob)[2] == 48_000


def test_aac_is_an_m4a_with_the_moov_atom_before_the_media_data():
    # Given an AAC encoding
    blob = encode_audio(sine(1.0), RATE, "aac")
    # When its top-level boxes are inspected
    # Then it is an MP4 (ftyp first) whose moov precedes mdat, so it streams from a URL
    assert blob[4:8] == b"ftyp"
    assert 0 < blob.find(b"moov") < blob.find(b"mdat")
    assert AUDIO_FORMATS["aac"].extension == "m4a" and AUDIO_FORMATS["aac"].content_type == "audio/mp4"


def test_a_torch_tensor_and_a_1_by_n_array_are_accepted():
    # Given the same samples as an ndarray, a tensor and a (1, N) tensor
    data = sine(0.1)
    # When each is encoded as wav
    blobs = {encode_audio(x, RATE, "wav") for x in (data, torch.from_numpy(data), torch.from_numpy(data)[None])}
    # Then the bytes are identical
    assert len(blobs) == 1


def test_every_format_has_an_extension_and_a_content_type():
    # Given the format table
    # When it is read
    # Then each entry is named after its key and has an extension and an audio/* content type
    assert set(AUDIO_FORMATS) == {"wav", "flac", "mp3", "opus", "aac", "pcm"}
    for key, spec in AUDIO_FORMATS.items():
        assert spec.name == key and spec.extension and spec.content_type.startswith("audio/")


@pytest.mark.parametrize("fmt", ["ogg", "WAV", "m4b", ""])
def test_an_unknown_format_raises_unsupported_format_listing_the_valid_ones(fmt):
    # Given an unknown format name
    # When encoding is asked for it
    # Then UnsupportedFormat names the valid formats
    with pytest.raises(UnsupportedFormat, match="wav, flac, mp3, opus, aac, pcm"):
        encode_audio(sine(0.1), RATE, fmt)


def test_a_rate_the_codec_cannot_take_raises_unsupported_format_listing_rates():
    # Given mp3 at 96 kHz (LAME stops at 48 kHz)
    # When encoded
    # Then UnsupportedFormat lists the valid rates
    with pytest.raises(UnsupportedFormat, match="44100"):
        encode_audio(sine(0.1), RATE, "mp3", out_sample_rate=96_000)


def test_bad_samples_raise_named_errors():
    # Given empty, NaN, stereo and out-of-range-rate inputs
    # When encoded
    # Then each raises a named error
    with pytest.raises(InvalidAudio, match="no samples"):
        encode_audio(np.zeros(0, np.float32), RATE, "mp3")
    with pytest.raises(InvalidAudio, match="NaN"):
        encode_audio(np.array([0.0, np.nan], np.float32), RATE, "wav")
    with pytest.raises(InvalidAudio, match="shape"):
        encode_audio(np.zeros((2, 10), np.float32), RATE, "wav")
    with pytest.raises(InvalidInput, match="8000-192000"):
        encode_audio(sine(0.1), RATE, "wav", out_sample_rate=1_000)


def test_join_segments_length_is_the_sum_plus_the_pauses():
    # Given three pieces of different lengths
    pieces = [sine(0.5), sine(0.3), sine(0.2)]
    # When they are joined with 0.25 s pauses
    joined = join_segments(pieces, RATE, pause_s=0.25)
    # Then the length is the pieces plus two pauses, and each pause is exact silence
    pause = int(round(0.25 * RATE))
    assert joined.dtype == np.float32
    assert joined.size == sum(p.size for p in pieces) + 2 * pause
    assert not joined[pieces[0].size : pieces[0].size + pause].any()


def test_join_segments_fades_the_edges_but_keeps_the_middle():
    # Given a constant-level piece
    piece = np.full(RATE, 0.5, dtype=np.float32)
    # When joined alone with a 10 ms fade
    joined = join_segments([piece], RATE, fade_s=0.01)
    # Then it starts and ends near zero and is untouched in the middle
    assert abs(joined[0]) < 0.01 and abs(joined[-1]) < 0.01
    np.testing.assert_array_equal(joined[1000:-1000], piece[1000:-1000])


def test_join_segments_takes_one_pause_per_gap_and_drops_empty_pieces():
    # Given pieces with an empty one and per-gap pauses
    pieces = [sine(0.1), np.zeros(0, np.float32), sine(0.1), sine(0.1)]
    # When joined with pauses 0.1, 0.2, 0.5
    joined = join_segments(pieces, RATE, pause_s=[0.1, 0.2, 0.5], fade_s=0.0)
    # Then the empty piece and the gap after it vanish
    assert joined.size == 3 * pieces[0].size + int(round(0.1 * RATE)) + int(round(0.5 * RATE))
    # And a wrong number of pauses is an error, an empty list is empty audio
    with pytest.raises(InvalidInput, match="one per gap"):
        join_segments(pieces, RATE, pause_s=[0.1])
    assert join_segments([], RATE).size == 0


def test_trim_silence_cuts_quiet_edges_but_keeps_a_margin():
    # Given a sine with 1 s of silence on each side
    core = sine(0.5)
    padded = np.concatenate([np.zeros(RATE, np.float32), core, np.zeros(RATE, np.float32)])
    # When trimmed with a 50 ms margin
    trimmed = trim_silence(padded, RATE, keep_s=0.05)
    # Then about the core plus two margins remains, and silence alone trims to nothing
    assert abs(trimmed.size - (core.size + 2 * int(0.05 * RATE))) <= 2
    assert trim_silence(np.zeros(100, np.float32), RATE).size == 0


# --- chunks of a track sent while it renders ---------------------------------------------------------


def test_streamed_pcm_chunks_are_the_samples_pcm_encoding_writes() -> None:
    # Given a track cut in two
    track = sine(1.0, 44_100)
    # When each half is encoded as a stream chunk
    parts = [encode_stream_chunk(half, 44_100, "pcm") for half in (track[:20_000], track[20_000:])]
    # Then the chunks put together are the pcm file of the whole track, byte for byte
    assert b"".join(parts) == encode_audio(track, 44_100, "pcm")
    # and wav chunks are the wav file's 16-bit samples (the streaming header is the receiver's)
    wav_chunks = b"".join(encode_stream_chunk(half, 44_100, "wav") for half in (track[:20_000], track[20_000:]))
    stored, _ = sf.read(io.BytesIO(encode_audio(track, 44_100, "wav")), dtype="int16")
    assert np.array_equal(np.frombuffer(wav_chunks, "<i2"), stored)


def test_streamed_mp3_chunks_are_bare_frames_that_decode_as_one_stream() -> None:
    # Given three one-second chunks encoded at 24 kHz
    chunks = [encode_stream_chunk(sine(1.0, 44_100), 44_100, "mp3", out_sample_rate=24_000) for _ in range(3)]
    # Then none starts with an ID3 tag (the first bytes are an MPEG frame sync)
    assert all(c[:3] != b"ID3" and c[0] == 0xFF and c[1] & 0xE0 == 0xE0 for c in chunks)
    # and the concatenation decodes as one stream of about three seconds (each chunk adds < 0.1 s padding)
    with av.open(io.BytesIO(b"".join(chunks))) as container:
        decoded = sum(frame.samples for frame in container.decode(audio=0)) / 24_000
    assert 3.0 <= decoded < 3.3


def test_only_pcm_wav_and_mp3_can_be_streamed_and_an_empty_chunk_is_empty() -> None:
    with pytest.raises(UnsupportedFormat, match="flac cannot be streamed"):
        encode_stream_chunk(sine(0.1, 44_100), 44_100, "flac")
    assert encode_stream_chunk(np.zeros(0, np.float32), 44_100, "mp3") == b""
