"""The end-to-end Pipeline on the tiny checkpoint: text (+ voice) -> cropped 44.1 kHz audio."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from echo_tts.audio import encode_audio
from echo_tts.config import AE_DOWNSAMPLE_FACTOR, DEFAULT_PRESET, SAMPLE_RATE, sampler_preset
from echo_tts.errors import Cancelled, InvalidInput, InvalidSamplerConfig, TextTooLong
from echo_tts.pipeline import Pipeline, as_dtype
from echo_tts.sampler import encode_conditioning, find_flattening_point, sample
from echo_tts.speaker import SpeakerLatents, batch_speakers, empty_speaker
from echo_tts.testing import make_checkpoint
from echo_tts.text import encode_texts

SENTENCE = "Hello there, this is a short test sentence."
FAST = sampler_preset(DEFAULT_PRESET).replace(num_steps=8)  # same code path, fewer steps


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rendered(pipe: Pipeline):
    return pipe.synthesize(SENTENCE, None, DEFAULT_PRESET, seed=0)


@pytest.fixture(scope="module")
def voice(pipe: Pipeline, rendered) -> SpeakerLatents:
    return pipe.encode_speaker(torch.from_numpy(rendered.samples)[None])


def test_a_sentence_renders_at_44k_cropped_at_its_flattening_point(pipe, rendered):
    # Given the latents the sampler makes for the same text, voice, preset and seed
    cond = encode_conditioning(pipe.model, encode_texts([SENTENCE]), *batch_speakers([empty_speaker()]))
    latents = sample(pipe.model, cond, sampler_preset(DEFAULT_PRESET), seeds=[0])
    point = find_flattening_point(latents[0])
    # Then the render is mono float32 at 44.1 kHz, exactly point * 2048 samples, audible and finite
    assert rendered.sample_rate == SAMPLE_RATE == 44_100
    assert rendered.samples.dtype == np.float32 and rendered.samples.ndim == 1
    assert 0 < point < 640 and rendered.samples.shape[0] == point * AE_DOWNSAMPLE_FACTOR
    assert np.isfinite(rendered.samples).all() and 0.01 < np.sqrt(np.mean(rendered.samples**2)) < 0.9
    # And the metadata describes it
    meta = rendered.metadata
    assert meta["normalized_text"] == "[S1] " + SENTENCE
    assert meta["num_latents"] == point and meta["seed"] == 0
    assert meta["duration_s"] == pytest.approx(point * AE_DOWNSAMPLE_FACTOR / SAMPLE_RATE)
    assert meta["settings"]["num_steps"] == 40 and meta["settings"]["cfg_scale_speaker"] == 8.0
    assert meta["model_revision"] == pipe.model_revision


def _rate_and_frames(data: bytes, fmt: str) -> tuple[int, int]:
    if fmt in ("wav", "flac"):
        info = sf.info(io.BytesIO(data))
        return info.samplerate, info.frames
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, frames


@pytest.mark.parametrize(
    ("fmt", "rate", "expected_rate"),
    [
        ("wav", None, 44_100),
        ("flac", None, 44_100),
        ("mp3", None, 44_100),
        ("aac", None, 44_100),
        ("opus", None, 48_000),
        ("wav", 24_000, 24_000),
        ("mp3", 22_050, 22_050),
        ("flac", 16_000, 16_000),
    ],
)
def test_a_render_encodes_to_every_format_at_the_asked_rate(rendered, fmt, rate, expected_rate):
    # When the render is encoded
    data = encode_audio(rendered.samples, rendered.sample_rate, fmt, out_sample_rate=rate)
    # Then the file decodes at the expected rate with about the same duration (opus is 48 kHz only)
    got_rate, frames = _rate_and_frames(data, fmt)
    assert got_rate == expected_rate
    assert frames / got_rate == pytest.approx(rendered.metadata["duration_s"], abs=0.1)


def test_raw_pcm_is_16_bit_little_endian_at_44k(rendered):
    # When the render is encoded as raw PCM
    data = encode_audio(rendered.samples, rendered.sample_rate, "pcm")
    # Then it is two bytes per sample, the same samples within 16-bit rounding
    decoded = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767
    assert decoded.shape == rendered.samples.shape
    assert np.abs(decoded - np.clip(rendered.samples, -1, 1)).max() < 1e-4


def test_the_same_seed_gives_the_same_audio_and_another_seed_other_audio(pipe, rendered):
    # When the sentence is rendered again with seed 0 and with seed 1
    again = pipe.synthesize(SENTENCE, None, DEFAULT_PRESET, seed=0)
    other = pipe.synthesize(SENTENCE, None, DEFAULT_PRESET, seed=1)
    # Then seed 0 reproduces the samples exactly and seed 1 differs
    assert np.array_equal(again.samples, rendered.samples)
    n = min(other.samples.shape[0], rendered.samples.shape[0])
    assert not np.allclose(other.samples[:n], rendered.samples[:n], atol=1e-3)


def test_a_saved_and_reloaded_voice_renders_the_same_audio(pipe, voice, tmp_path):
    # Given a voice encoded once and saved as safetensors
    path = tmp_path / "voice.safetensors"
    voice.save(path)
    reloaded = SpeakerLatents.load(path)
    # When the same text and seed render with the original and the reloaded voice
    original = pipe.synthesize(SENTENCE, voice, FAST, seed=3)
    again = pipe.synthesize(SENTENCE, reloaded, FAST, seed=3)
    # Then the audio is identical
    assert np.array_equal(original.samples, again.samples)


def test_a_voice_encodes_from_a_path_bytes_or_a_tensor_alike(pipe, rendered, voice, tmp_path):
    # Given the reference written as a 44.1 kHz float WAV file
    path = tmp_path / "reference.wav"
    sf.write(path, rendered.samples, SAMPLE_RATE, subtype="FLOAT")
    # When it is encoded from the path and from the bytes
    from_path = pipe.encode_speaker(str(path))
    from_bytes = pipe.encode_speaker(path.read_bytes())
    # Then both equal the tensor encoding: one valid frame per 2048 samples, a multiple of 4
    for encoded in (from_path, from_bytes):
        assert torch.equal(encoded.mask, voice.mask)
        torch.testing.assert_close(encoded.latents, voice.latents)
    assert voice.length == rendered.samples.shape[0] // AE_DOWNSAMPLE_FACTOR // 4 * 4


def test_an_item_renders_the_same_alone_and_in_a_batch(pipe, voice):
    # Given two different items, one with a voice and one without
    texts, speakers, seeds = [SENTENCE, "A second, rather different line."], [voice, None], [5, 9]
    # When they render as a batch and one by one
    batch = pipe.synthesize_batch(texts, speakers, FAST, seeds)
    alone = [pipe.synthesize(t, s, FAST, seed=n) for t, s, n in zip(texts, speakers, seeds, strict=True)]
    # Then each item is cropped at its own point and matches its solo render
    for together, single in zip(batch, alone, strict=True):
        assert together.metadata["num_latents"] == single.metadata["num_latents"]
        np.testing.assert_allclose(together.samples, single.samples, atol=2e-4)
    assert batch[0].metadata["seed"] == 5 and batch[1].metadata["seed"] == 9


def test_progress_is_reported_after_every_diffusion_step(pipe):
    # Given a progress recorder
    steps: list[tuple[int, int]] = []
    # When a render of 8 steps runs
    pipe.synthesize(SENTENCE, None, FAST, seed=0, progress=lambda step, total: steps.append((step, total)))
    # Then progress saw every step, in order
    assert steps == [(i, 8) for i in range(1, 9)]


def test_a_cancel_between_steps_stops_the_render(pipe):
    # Given a hook that asks to stop once three steps are done
    done: list[int] = []
    # When a render runs with both hooks
    with pytest.raises(Cancelled):
        pipe.synthesize(
            SENTENCE, None, FAST, 0, progress=lambda step, _: done.append(step), should_cancel=lambda: len(done) >= 3
        )
    # Then it stopped after exactly three steps
    assert done == [1, 2, 3]


def test_text_over_one_generation_is_refused_and_presets_are_checked(pipe):
    # When the text exceeds 768 tokens, or the preset is unknown
    with pytest.raises(TextTooLong, match="768"):
        pipe.synthesize("word " * 200, None, FAST)
    with pytest.raises(InvalidSamplerConfig, match="Independent-Low-CFG"):
        pipe.synthesize(SENTENCE, None, "loud")


def test_the_model_revision_is_stable_and_names_the_weights(checkpoint, pipe, tmp_path):
    # When the same files load again, and another seed's checkpoint loads
    again = Pipeline.from_pretrained(checkpoint / "echo-tts-base", checkpoint / "fish-s1-dac-min", dtype="float32")
    other_root = make_checkpoint(tmp_path / "other", seed=1)
    other = Pipeline.from_pretrained(other_root / "echo-tts-base", other_root / "fish-s1-dac-min")
    # Then the revision is the same for the same files and differs for other weights
    assert again.model_revision == pipe.model_revision
    assert other.model_revision != pipe.model_revision and len(pipe.model_revision) == 32
    # And the default dtype is bfloat16 for the DiT, as upstream
    assert other.model.dtype == torch.bfloat16 and as_dtype("bf16") == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_pipeline_renders_on_cuda_in_bfloat16_like_on_the_cpu(checkpoint, rendered):
    # Given the tiny checkpoint loaded on CUDA with the default bfloat16 DiT
    gpu = Pipeline.from_pretrained(checkpoint / "echo-tts-base", checkpoint / "fish-s1-dac-min", device="cuda")
    # When a voice encodes from a CUDA tensor and a sentence renders with it, twice
    voice = gpu.encode_speaker(torch.from_numpy(rendered.samples)[None].cuda())
    first = gpu.synthesize(SENTENCE, voice, FAST, seed=4)
    second = gpu.synthesize(SENTENCE, voice, FAST, seed=4)
    # Then the audio comes back on the host, cropped, finite, and reproducible
    assert isinstance(first.samples, np.ndarray) and np.isfinite(first.samples).all()
    assert 0 < first.metadata["num_latents"] < 640
    assert first.samples.shape[0] == first.metadata["num_latents"] * AE_DOWNSAMPLE_FACTOR
    assert np.array_equal(first.samples, second.samples)


def test_a_pipeline_with_a_latent_cap_never_samples_a_longer_canvas(pipe: Pipeline) -> None:
    # Given the same loaded parts with the 8 GB profile's kind of cap (here 96 latents, ~4.5 s)
    capped = Pipeline(pipe.model, pipe.autoencoder, pipe.pca, max_latents=96, model_revision=pipe.model_revision)
    # When a sentence renders with the default 640-latent config, fixed and fitted
    for canvas in ("fixed", "auto"):
        result = capped.synthesize(SENTENCE, None, FAST, seed=0, canvas=canvas)
        # Then the sampler ran on at most 96 latents, and the audio is no longer than that
        assert result.metadata["settings"]["sequence_length"] <= 96
        assert result.samples.shape[0] <= 96 * AE_DOWNSAMPLE_FACTOR
    # And a cap outside 1..640 is refused by name
    with pytest.raises(InvalidInput, match="max_latents"):
        Pipeline(pipe.model, pipe.autoencoder, pipe.pca, max_latents=641)
