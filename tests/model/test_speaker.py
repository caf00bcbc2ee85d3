"""Speaker latents (spec §4.2) with a fake deterministic encoder, and their safetensors files."""

from __future__ import annotations

import pytest
import torch

from echo_tts.errors import InvalidAudio, InvalidInput
from echo_tts.speaker import (
    CHUNK_SAMPLES,
    MIN_REFERENCE_SAMPLES,
    SpeakerLatents,
    batch_speakers,
    empty_speaker,
    speaker_latents_from_audio,
)

HOP = 2048
CHUNK = 640


class FakeEncoder:
    """Mean-pools each 2048-sample hop and spreads it over 80 dims (+ a per-dim offset).

    Deterministic, chunk-local (a frame depends only on its own hop), and it records each
    chunk it is given so tests can check the chunking.
    """

    def __init__(self, chunk_samples: int = CHUNK_SAMPLES) -> None:
        self.calls: list[torch.Tensor] = []
        self.chunk_samples = chunk_samples

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        self.calls.append(audio.clone())
        assert audio.shape == (1, 1, self.chunk_samples)
        pooled = audio.reshape(1, -1, HOP).mean(dim=-1, keepdim=True)  # (1, K, 1)
        return pooled * torch.arange(1, 81, dtype=torch.float32) + 0.001 * torch.arange(80)  # (1, K, 80)


def ramp(num_samples: int) -> torch.Tensor:
    """Audio whose every hop has a distinct, known mean."""
    return (torch.arange(num_samples, dtype=torch.float32) / CHUNK_SAMPLES / 20).unsqueeze(0)  # (1, N)


def expected_frames(audio: torch.Tensor, frames: int) -> torch.Tensor:
    hops = audio[0, : frames * HOP].reshape(frames, HOP).mean(dim=-1, keepdim=True)
    return (hops * torch.arange(1, 81) + 0.001 * torch.arange(80)).unsqueeze(0)


def test_a_reference_shorter_than_a_chunk_keeps_only_its_valid_frames():
    # Given 10.5 hops of audio (10 whole latent frames)
    audio = ramp(10 * HOP + HOP // 2)
    encoder = FakeEncoder()
    # When speaker latents are computed without a bucket
    speaker = speaker_latents_from_audio(audio, encoder)
    # Then one chunk was encoded, zero-padded on the right
    assert len(encoder.calls) == 1
    assert torch.equal(encoder.calls[0][0, :, : audio.shape[1]], audio)
    assert not encoder.calls[0][0, 0, audio.shape[1] :].any()
    # And floor(10/4)*4 = 8 frames remain, all valid, equal to the encodings of the first 8 hops
    assert speaker.latents.shape == (1, 8, 80) and speaker.mask.shape == (1, 8)
    assert speaker.mask.all() and speaker.latents.dtype == torch.float32
    torch.testing.assert_close(speaker.latents, expected_frames(audio, 8))


def test_a_reference_longer_than_a_chunk_is_encoded_in_independent_chunks():
    # Given 1.5 chunks of audio
    num = CHUNK_SAMPLES + CHUNK_SAMPLES // 2
    audio = ramp(num)
    encoder = FakeEncoder()
    # When speaker latents are computed
    speaker = speaker_latents_from_audio(audio, encoder)
    # Then two chunks were encoded: the first whole, the second the remainder plus zeros
    assert len(encoder.calls) == 2
    assert torch.equal(encoder.calls[0][0], audio[:, :CHUNK_SAMPLES])
    assert torch.equal(encoder.calls[1][0, :, : CHUNK_SAMPLES // 2], audio[:, CHUNK_SAMPLES:])
    assert not encoder.calls[1][0, 0, CHUNK_SAMPLES // 2 :].any()
    # And the frames are the valid 960 (a multiple of 4), matching a per-hop encoding
    assert speaker.length == 960 and speaker.valid_frames == 960
    torch.testing.assert_close(speaker.latents, expected_frames(audio, 960))


def test_each_chunk_is_encoded_without_seeing_its_neighbours():
    # Given an encoder whose output depends on the whole chunk (its global mean)
    def global_encoder(chunk: torch.Tensor) -> torch.Tensor:
        return chunk.mean().expand(1, CHUNK, 80).clone()

    first = ramp(CHUNK_SAMPLES)
    # When the second chunk changes
    a = speaker_latents_from_audio(torch.cat([first, torch.zeros(1, CHUNK_SAMPLES)], 1), global_encoder)
    b = speaker_latents_from_audio(torch.cat([first, torch.ones(1, CHUNK_SAMPLES)], 1), global_encoder)
    # Then the first chunk's frames do not change
    assert torch.equal(a.latents[:, :CHUNK], b.latents[:, :CHUNK])
    assert not torch.equal(a.latents[:, CHUNK:], b.latents[:, CHUNK:])


def test_a_bucket_pads_with_zero_frames_that_are_masked():
    # Given 10.5 hops of audio and a bucket of 700 frames
    audio = ramp(10 * HOP + HOP // 2)
    # When speaker latents are computed in bucket mode
    speaker = speaker_latents_from_audio(audio, FakeEncoder(), bucket=700)
    # Then there are 700 frames, the first 10 valid
    assert speaker.length == 700
    assert speaker.mask[0, :10].all() and not speaker.mask[0, 10:].any()
    # And masked frame 10 encodes the half hop of audio plus padding (not zeros),
    # frames 11..639 are the encodings of pure padding, frames 640.. are exact zeros
    half_hop_mean = audio[0, 10 * HOP :].sum() / HOP  # the rest of hop 10 is zero padding
    torch.testing.assert_close(speaker.latents[0, 10], half_hop_mean * torch.arange(1, 81) + 0.001 * torch.arange(80))
    padding_code = 0.001 * torch.arange(80, dtype=torch.float32)
    torch.testing.assert_close(speaker.latents[0, 11:640], padding_code.expand(629, 80))
    assert not speaker.latents[0, 640:].any()
    torch.testing.assert_close(speaker.latents[:, :10], expected_frames(audio, 10))


def test_a_bucket_caps_the_reference_and_never_crops_the_encoded_chunk():
    # Given 1.5 chunks of audio and a bucket of 702 frames (not a multiple of 640)
    audio = ramp(CHUNK_SAMPLES + CHUNK_SAMPLES // 2)
    encoder = FakeEncoder()
    # When speaker latents are computed with bucket=702
    speaker = speaker_latents_from_audio(audio, encoder, bucket=702)
    # Then the audio was cut to 702 hops, two chunks were encoded, and all 1280 frames stay
    assert len(encoder.calls) == 2
    assert not encoder.calls[1][0, 0, 62 * HOP :].any()
    assert speaker.length == 1280
    assert speaker.valid_frames == 702 and speaker.mask[0, :702].all()


def test_a_bucket_truncates_to_a_multiple_of_four_frames():
    # Given a bucket of 7 frames and a long reference
    # When speaker latents are computed
    speaker = speaker_latents_from_audio(ramp(20 * HOP), FakeEncoder(), bucket=7)
    # Then the 640 encoded frames stay, 7 valid, and the length is a multiple of 4
    assert speaker.length == 640 and speaker.valid_frames == 7


def test_another_chunk_size_encodes_chunks_of_that_many_frames():
    # Given 150.5 hops of audio and chunks of 64 latent frames
    audio = ramp(150 * HOP + HOP // 2)
    encoder = FakeEncoder(64 * HOP)
    # When speaker latents are computed with chunk_latents=64
    speaker = speaker_latents_from_audio(audio, encoder, chunk_latents=64)
    # Then three chunks of 64 hops were encoded, the last one zero-padded after the audio
    assert len(encoder.calls) == 3
    assert torch.equal(encoder.calls[2][0, :, : audio.shape[1] - 128 * HOP], audio[:, 128 * HOP :])
    assert not encoder.calls[2][0, 0, audio.shape[1] - 128 * HOP :].any()
    # And the 148 valid frames (150 rounded down to a multiple of 4) are the per-hop encodings
    assert speaker.length == 148 and speaker.mask.all()
    torch.testing.assert_close(speaker.latents, expected_frames(audio, 148))
    # And with a bucket of 200 the 192 encoded frames are padded to 200, the first 150 valid
    bucketed = speaker_latents_from_audio(audio, FakeEncoder(64 * HOP), bucket=200, chunk_latents=64)
    assert bucketed.length == 200 and bucketed.valid_frames == 150 and bucketed.mask[0, :150].all()
    assert not bucketed.latents[0, 192:].any()


def test_a_chunk_of_no_frames_is_refused():
    with pytest.raises(InvalidInput, match="chunk_latents"):
        speaker_latents_from_audio(ramp(8 * HOP), FakeEncoder(), chunk_latents=0)


def test_max_latents_caps_the_reference_length():
    # Given 100 hops of audio and max_latents=50
    # When speaker latents are computed
    speaker = speaker_latents_from_audio(ramp(100 * HOP), FakeEncoder(), max_latents=50)
    # Then 48 frames (50 rounded down to a multiple of 4) remain
    assert speaker.length == 48 and speaker.mask.all()


def test_a_reference_shorter_than_one_patch_raises_invalid_audio_naming_the_minimum():
    # Given one sample less than 4 hops
    audio = ramp(MIN_REFERENCE_SAMPLES - 1)
    # When speaker latents are computed
    # Then InvalidAudio names the minimum
    with pytest.raises(InvalidAudio, match=str(MIN_REFERENCE_SAMPLES)):
        speaker_latents_from_audio(audio, FakeEncoder())
    # And exactly the minimum works, giving one patch
    assert speaker_latents_from_audio(ramp(MIN_REFERENCE_SAMPLES), FakeEncoder()).length == 4


def test_bad_audio_shapes_and_encoder_outputs_raise():
    # Given a 1-D tensor, and an encoder returning the wrong shape
    # When used
    # Then named errors say what was expected
    with pytest.raises(InvalidAudio, match=r"\(1, N\)"):
        speaker_latents_from_audio(torch.zeros(HOP * 8), FakeEncoder())
    with pytest.raises(ValueError, match="expected"):
        speaker_latents_from_audio(ramp(HOP * 8), lambda a: torch.zeros(1, 10, 80))


def test_empty_speaker_is_zero_latents_with_an_all_false_mask():
    # Given no reference
    # When the empty speaker is built, default and for a bucket
    default, bucketed = empty_speaker(), empty_speaker(2816)
    # Then it is zeros with every frame masked
    assert default.latents.shape == (1, 4, 80) and not default.latents.any() and not default.mask.any()
    assert bucketed.length == 2816 and bucketed.valid_frames == 0


def test_bytes_and_file_round_trips_are_bit_exact(tmp_path):
    # Given speaker latents with random values and a partial mask
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 12, 80, generator=generator)
    mask = torch.tensor([[True] * 9 + [False] * 3])
    speaker = SpeakerLatents(latents, mask)
    # When written to bytes and to a file and read back
    from_bytes = SpeakerLatents.from_bytes(speaker.to_bytes())
    speaker.save(tmp_path / "latents.safetensors")
    from_file = SpeakerLatents.load(tmp_path / "latents.safetensors")
    # Then the tensors are bit-identical
    for loaded in (from_bytes, from_file):
        assert torch.equal(loaded.latents.view(torch.int32), latents.view(torch.int32))
        assert torch.equal(loaded.mask, mask) and loaded.mask.dtype == torch.bool


@pytest.mark.parametrize(
    ("latents", "mask", "words"),
    [
        (torch.zeros(1, 8, 80, dtype=torch.float16), torch.ones(1, 8, dtype=torch.bool), "float32"),
        (torch.zeros(1, 8, 64), torch.ones(1, 8, dtype=torch.bool), "shape"),
        (torch.zeros(1, 8, 80), torch.ones(1, 7, dtype=torch.bool), "mask must have shape"),
        (torch.zeros(1, 6, 80), torch.ones(1, 6, dtype=torch.bool), "multiple of 4"),
        (torch.zeros(1, 8, 80), torch.ones(1, 8), "bool"),
    ],
    ids=["dtype", "width", "mask-shape", "length", "mask-dtype"],
)
def test_malformed_latents_are_rejected_by_name(latents, mask, words):
    # Given tensors of the wrong dtype or shape
    # When a SpeakerLatents is built
    # Then InvalidInput names the problem
    with pytest.raises(InvalidInput, match=words):
        SpeakerLatents(latents, mask)


def test_a_file_that_is_not_speaker_latents_raises_invalid_input(tmp_path):
    # Given garbage, a truncated file, and a safetensors file of something else
    import safetensors.torch

    good = empty_speaker(8).to_bytes()
    other = safetensors.torch.save({"weight": torch.zeros(2)}, metadata={"format": "pt"})
    wrong_shape = safetensors.torch.save(
        {"speaker_latents": torch.zeros(1, 8, 3), "speaker_mask": torch.zeros(1, 8, dtype=torch.bool)},
        metadata={"format": "echo-tts-speaker-latents", "version": "1"},
    )
    # When each is loaded
    # Then InvalidInput explains why
    for data, words in [
        (b"hello", "too short"),
        (good[:40], "truncated"),
        (good[:-10], "corrupt"),
        (other, "not a speaker-latents file"),
        (wrong_shape, "shape"),
        (good.replace(b'"version":"1"', b'"version":"9"'), "version"),
    ]:
        with pytest.raises(InvalidInput, match=words):
            SpeakerLatents.from_bytes(data)


def test_batch_speakers_pads_shorter_items_with_masked_zeros():
    # Given speakers of lengths 8 and 4
    long, short = SpeakerLatents(torch.ones(1, 8, 80), torch.ones(1, 8, dtype=torch.bool)), empty_speaker(4)
    # When batched
    latents, mask = batch_speakers([long, short])
    # Then both are 8 frames; the short one is zero and masked beyond its length
    assert latents.shape == (2, 8, 80) and mask.shape == (2, 8)
    assert torch.equal(latents[0], long.latents[0]) and not latents[1].any() and not mask[1].any()
