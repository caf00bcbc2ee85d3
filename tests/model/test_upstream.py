"""Upstream-compatible names: same arguments and semantics, equal to the clean API on the tiny model."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import echo_tts
from echo_tts import upstream
from echo_tts.config import AE_DOWNSAMPLE_FACTOR, SAMPLE_RATE, sampler_preset
from echo_tts.errors import InvalidInput
from echo_tts.sampler import encode_conditioning, sample
from echo_tts.sampler import find_flattening_point as clean_flattening_point
from echo_tts.speaker import batch_speakers, empty_speaker
from echo_tts.text import encode_texts

TEXT = "Upstream code should run unchanged."
PRESET = "Independent-High-Speaker-CFG-Flat"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts(checkpoint: Path):
    model = upstream.load_model_from_hf(str(checkpoint / "echo-tts-base"), device="cpu", dtype=torch.float32)
    fish_ae = upstream.load_fish_ae_from_hf(str(checkpoint / "fish-s1-dac-min"), device="cpu")
    pca_state = upstream.load_pca_state_from_hf(str(checkpoint / "echo-tts-base"), device="cpu")
    return model, fish_ae, pca_state


def _sample_fn(preset: str = PRESET, **overrides):
    config = sampler_preset(preset).replace(**overrides)
    fields = {name: getattr(config, name) for name in config.__dataclass_fields__}
    return functools.partial(upstream.sample_euler_cfg_independent_guidances, **fields)


def test_the_upstream_names_are_exported_from_the_package():
    # Then every upstream name is importable from echo_tts and is the wrapper
    for name in upstream.__all__:
        assert getattr(echo_tts, name) is getattr(upstream, name)
        assert name in echo_tts.__all__


def test_the_loaders_keep_upstream_defaults_and_equal_the_clean_loaders(checkpoint, parts, pipe):
    # Given the parts loaded with the upstream loaders (blockwise modules kept by default)
    model, fish_ae, pca_state = parts
    # Then they are the same weights as the pipeline's, in eval mode
    assert model.blockwise and not pipe.model.blockwise and not model.training
    for name, tensor in pipe.model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name])
    assert torch.equal(pca_state.pca_components, pipe.pca.pca_components)
    assert isinstance(pca_state.latent_scale, float)
    assert fish_ae.dtype == torch.float32
    # And delete_blockwise_modules drops them, with upstream's bfloat16 default
    dropped = upstream.load_model_from_hf(
        str(checkpoint / "echo-tts-base"), device="cpu", delete_blockwise_modules=True
    )
    assert not dropped.blockwise and dropped.dtype == torch.bfloat16


def test_sample_pipeline_equals_pipeline_synthesize(parts, pipe):
    # Given upstream's README recipe: a sample_fn partial over the preset's settings
    model, fish_ae, pca_state = parts
    # When the same text and seed render through sample_pipeline and through the Pipeline
    audio_out, normalized = upstream.sample_pipeline(
        model=model,
        fish_ae=fish_ae,
        pca_state=pca_state,
        sample_fn=_sample_fn(),
        text_prompt=TEXT,
        speaker_audio=None,
        rng_seed=7,
    )
    clean = pipe.synthesize(TEXT, None, PRESET, seed=7)
    # Then the cropped audio and the normalised text agree
    assert normalized == ["[S1] " + TEXT]
    assert audio_out.shape == (1, 1, clean.samples.shape[0])
    np.testing.assert_allclose(audio_out[0, 0].numpy(), clean.samples, atol=2e-4)


def test_a_reference_clip_conditions_sample_pipeline_like_encode_speaker(parts, pipe):
    # Given a reference clip (a previous render)
    model, fish_ae, pca_state = parts
    reference = torch.from_numpy(pipe.synthesize("A reference voice.", None, PRESET, seed=1).samples)[None]
    # When upstream encodes it, and the pipeline encodes it
    latents, mask = upstream.get_speaker_latent_and_mask(fish_ae, pca_state, reference)
    voice = pipe.encode_speaker(reference)
    # Then the speaker latents agree, and sample_pipeline with it equals synthesize with the voice
    torch.testing.assert_close(latents, voice.latents)
    assert torch.equal(mask, voice.mask)
    fn = _sample_fn(num_steps=8)
    audio_out, _ = upstream.sample_pipeline(model, fish_ae, pca_state, fn, TEXT, reference, 3)
    clean = pipe.synthesize(TEXT, voice, sampler_preset(PRESET).replace(num_steps=8), seed=3)
    np.testing.assert_allclose(audio_out[0, 0].numpy(), clean.samples, atol=2e-4)


def test_get_speaker_latent_and_mask_takes_any_chunk_of_whole_latent_frames(parts):
    # Given a reference of 150.5 latent frames and chunks of 64 frames
    _, fish_ae, pca_state = parts
    reference = 0.1 * torch.randn(1, 150 * AE_DOWNSAMPLE_FACTOR + 1024, generator=torch.Generator().manual_seed(4))
    chunk = 64 * AE_DOWNSAMPLE_FACTOR
    # When upstream encodes it in those chunks, without and with a bucket of 200 frames
    latents, mask = upstream.get_speaker_latent_and_mask(fish_ae, pca_state, reference, audio_chunk_size=chunk)
    padded, padded_mask = upstream.get_speaker_latent_and_mask(
        fish_ae, pca_state, reference, max_speaker_latent_length=200, audio_chunk_size=chunk, pad_to_max=True
    )
    # Then the shapes and masks follow spec §4.2: 148 valid frames, or 200 with the first 150 valid
    assert latents.shape == (1, 148, 80) and mask.shape == (1, 148) and bool(mask.all())
    assert padded.shape == (1, 200, 80) and padded_mask[0].tolist() == [True] * 150 + [False] * 50
    # And every chunk is encoded on its own: the second chunk's frames are ae_encode of its samples
    second = upstream.ae_encode(fish_ae, pca_state, reference[:, None, chunk : 2 * chunk])
    torch.testing.assert_close(latents[:, 64:128], second)
    torch.testing.assert_close(padded[:, :148], latents)
    # And a chunk size that is not whole latent frames is refused, naming the frame size
    with pytest.raises(InvalidInput, match=str(AE_DOWNSAMPLE_FACTOR)):
        upstream.get_speaker_latent_and_mask(fish_ae, pca_state, reference, audio_chunk_size=chunk + 1)


def test_one_rng_seed_draws_the_whole_batch_at_once_as_upstream(parts):
    # Given two copies of one text and no speaker
    model, _, _ = parts
    ids, mask = upstream.get_text_input_ids_and_mask([TEXT, TEXT], None, device="cpu")
    speaker, speaker_mask = torch.zeros(2, 4, 80), torch.zeros(2, 4, dtype=torch.bool)
    fn = _sample_fn(num_steps=4)
    # When the batch samples with rng_seed 5, and the first item alone with rng_seed 5
    both = fn(model, speaker, speaker_mask, ids, mask, 5)
    first = fn(model, speaker[:1], speaker_mask[:1], ids[:1], mask[:1], 5)
    # Then row 0 equals the solo render (the first draw) and row 1 continues the same generator
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_text_ids_are_cut_silently_at_max_length_like_upstream():
    # When a long text is tokenized with max_length 16, and two texts without a max_length
    ids, mask = upstream.get_text_input_ids_and_mask(["a" * 100], 16)
    ids2, mask2, normalized = upstream.get_text_input_ids_and_mask(
        ["Hi", "[S2] Hey"], None, return_normalized_text=True
    )
    # Then the row keeps BOS and the first 15 bytes of the normalised text, all masked in
    assert ids.shape == (1, 16) and ids.dtype == torch.int32 and bool(mask.all())
    assert ids[0, 0] == 0 and bytes(ids[0, 1:].tolist()) == b"[S1] aaaaaaaaaa"
    # And without max_length rows pad to the longest, padding masked out
    assert normalized == ["[S1] Hi", "[S2] Hey"] and ids2.shape == (2, 9)
    assert mask2.sum(dim=1).tolist() == [8, 9]


def test_find_flattening_point_and_the_crop_follow_upstream():
    # Given latents that are loud for 30 frames and silent after
    latents = torch.zeros(100, 80)
    latents[:30] = torch.randn(30, 80, generator=torch.Generator().manual_seed(0))
    audio = torch.randn(2, 1, 100 * 2048)
    # Then the point is where the window first lies in silence, as the clean function says
    assert upstream.find_flattening_point(latents) == clean_flattening_point(latents) == 30
    assert upstream.find_flattening_point(torch.randn(50, 80)) == 50
    # And every row is cropped at that one point
    assert upstream.crop_audio_to_flattening_point(audio, latents).shape == (2, 1, 30 * 2048)


def test_ae_encode_and_decode_follow_the_length_rule(parts, pipe):
    # Given 3 latent frames' worth of audio plus a bit
    _, fish_ae, pca_state = parts
    audio = 0.1 * torch.randn(1, 1, 3 * 2048 + 5, generator=torch.Generator().manual_seed(0))
    # When it is encoded and decoded
    latents = upstream.ae_encode(fish_ae, pca_state, audio)
    decoded = upstream.ae_decode(fish_ae, pca_state, latents)
    # Then the shapes follow 2048 samples per latent, and equal the pipeline's helpers
    assert latents.shape == (1, 4, 80) and latents.dtype == torch.float32
    assert decoded.shape == (1, 1, 4 * 2048) and decoded.dtype == torch.float32
    torch.testing.assert_close(decoded[:, 0], pipe.decode_latents(latents))


def test_load_audio_reads_a_file_like_upstream(tmp_path):
    # Given a 2-second stereo file at 22.05 kHz
    path = tmp_path / "stereo.wav"
    sf.write(path, np.full((44_100, 2), 0.25, dtype=np.float32), 22_050)
    # When it is loaded with a 1-second limit
    audio = upstream.load_audio(str(path), 1)
    # Then it is mono (1, N) at 44.1 kHz, the first second only
    assert audio.shape == (1, SAMPLE_RATE) and audio.dtype == torch.float32


def test_blockwise_continuation_keeps_the_prefix(parts):
    # Given a 8-frame continuation prefix and two blocks
    model, _, _ = parts
    ids, mask = upstream.get_text_input_ids_and_mask([TEXT], None)
    prefix = torch.randn(1, 8, 80, generator=torch.Generator().manual_seed(0))
    # When blockwise sampling runs with upstream's arguments
    out = upstream.sample_blockwise_euler_cfg_independent_guidances(
        model,
        torch.zeros(1, 4, 80),
        torch.zeros(1, 4, dtype=torch.bool),
        ids,
        mask,
        rng_seed=0,
        block_sizes=[8, 4],
        num_steps=3,
        cfg_scale_text=3.0,
        cfg_scale_speaker=3.0,
        cfg_min_t=0.5,
        cfg_max_t=1.0,
        truncation_factor=0.8,
        rescale_k=None,
        rescale_sigma=None,
        speaker_kv_scale=None,
        speaker_kv_max_layers=None,
        speaker_kv_min_t=None,
        continuation_latent=prefix,
    )
    # Then the buffer holds the prefix unchanged, then the new blocks
    assert out.shape == (1, 20, 80)
    assert torch.equal(out[:, :8], prefix)


def test_the_wrapper_sampler_equals_the_clean_sampler_for_one_item(parts):
    # Given conditioning built the clean way
    model, _, _ = parts
    config = sampler_preset(PRESET).replace(num_steps=6)
    cond = encode_conditioning(model, encode_texts([TEXT]), *batch_speakers([empty_speaker()]))
    ids, mask = upstream.get_text_input_ids_and_mask([TEXT], None)
    # When both samplers run with seed 11
    wrapped = _sample_fn(num_steps=6)(model, torch.zeros(1, 4, 80), torch.zeros(1, 4, dtype=torch.bool), ids, mask, 11)
    clean = sample(model, cond, config, seeds=[11])
    # Then the latents are identical
    assert torch.equal(wrapped, clean)
