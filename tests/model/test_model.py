"""EchoDiT structure and equations (spec §3) on the full-size meta model and a tiny random one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from echo_tts.config import EchoDiTConfig
from echo_tts.errors import InvalidInput
from echo_tts.layers import apply_rope, rope_frequencies
from echo_tts.model import EchoDiT, apply_rope_half_heads
from echo_tts.weights import is_blockwise_tensor

KEYS_JSON = Path(__file__).parent / "data" / "echo_dit_state_dict_keys.json"  # copy of the shared reference


def _published_dit_tensors() -> dict[str, list[int]]:
    return json.loads(KEYS_JSON.read_text())["echo_dit_pytorch_model_safetensors"]["tensors"]


def _shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}


def _conditioning(model: EchoDiT, batch: int = 2, text_len: int = 7, frames: int = 12, seed: int = 0):
    """Random text ids (last two padded in row 1) and speaker latents, encoded to K/V caches."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 256, (batch, text_len), generator=g)
    ids[:, 0] = 0  # BOS
    text_mask = torch.ones(batch, text_len, dtype=torch.bool)
    text_mask[-1, -2:] = False
    speaker = torch.randn(batch, frames, 80, generator=g)
    speaker_mask = torch.ones(batch, frames, dtype=torch.bool)
    return {
        "text_kv": model.get_kv_cache_text(ids, text_mask),
        "text_mask": text_mask,
        "speaker_kv": model.get_kv_cache_speaker(speaker),
        "speaker_mask": speaker_mask,
    }, (ids, speaker)


def _noise(batch: int = 2, length: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, 80, generator=g), torch.full((batch,), 0.7)


def test_full_size_model_has_exactly_the_published_tensor_names_and_shapes():
    # Given the published key list
    published = _published_dit_tensors()
    # When the full-size model is built on the meta device, with and without blockwise weights
    with torch.device("meta"):
        full = EchoDiT(EchoDiTConfig())
        standard = EchoDiT(EchoDiTConfig(), blockwise=False)
    # Then names and shapes match the file exactly; the standard model has the 1117 non-blockwise ones
    assert _shapes(full) == published
    expected_standard = {k: v for k, v in published.items() if not is_blockwise_tensor(k)}
    assert _shapes(standard) == expected_standard
    assert (len(published), len(expected_standard)) == (1336, 1117)
    assert sum(p.numel() for p in full.parameters()) == 2_800_742_736


def test_forward_returns_float32_velocity_of_the_input_shape(tiny_dit):
    # Given conditioning caches with the documented shapes
    cond, _ = _conditioning(tiny_dit)
    k_text, _ = cond["text_kv"][0]
    k_spk, _ = cond["speaker_kv"][0]
    assert len(cond["text_kv"]) == tiny_dit.config.num_layers
    assert k_text.shape == (2, 7, 4, 16) and k_spk.shape == (2, 3, 4, 16)
    # When the model runs on float64 inputs
    x, t = _noise()
    out = tiny_dit(x.double(), t.double(), **cond)
    # Then the velocity has the input shape, float32 and finite
    assert out.shape == (2, 10, 80) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_rope_rotates_only_the_first_half_of_the_heads():
    # Given a (B, N, H, Dh) tensor and two different position tables
    x = torch.randn(1, 5, 4, 8)
    at_zero = rope_frequencies(5, 8)
    shifted = rope_frequencies(12, 8)[7:]
    # When half-head RoPE is applied at both offsets
    a, b = apply_rope_half_heads(x, at_zero), apply_rope_half_heads(x, shifted)
    # Then heads 2..3 are untouched and heads 0..1 depend on the positions
    assert torch.equal(a[:, :, 2:], x[:, :, 2:]) and torch.equal(b[:, :, 2:], x[:, :, 2:])
    assert not torch.allclose(a[:, 1:, :2], b[:, 1:, :2])
    assert torch.equal(a[:, :, :2], apply_rope(x[:, :, :2], at_zero))


def test_shifting_start_pos_changes_nothing_when_only_self_keys_are_present(tiny_dit):
    # Given no text, speaker or prefix keys: queries and self keys rotate together (relative RoPE)
    cond, _ = _conditioning(tiny_dit)
    empty = {
        "text_kv": [(k[:, :0], v[:, :0]) for k, v in cond["text_kv"]],
        "text_mask": cond["text_mask"][:, :0],
        "speaker_kv": [(k[:, :0], v[:, :0]) for k, v in cond["speaker_kv"]],
        "speaker_mask": cond["speaker_mask"][:, :0],
    }
    x, t = _noise()
    # When the same latents run at start_pos 0 and 9
    a = tiny_dit(x, t, **empty)
    b = tiny_dit(x, t, **empty, start_pos=9)
    # Then only relative positions matter, so the output is the same up to rounding
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # And with text keys present (never rotated) the absolute position of the queries matters
    assert not torch.allclose(tiny_dit(x, t, **cond), tiny_dit(x, t, **cond, start_pos=9), atol=1e-4)


def test_text_and_speaker_keys_share_the_blocks_k_norm_without_rope(tiny_dit):
    # Given encoded text and speaker states
    cond, (ids, speaker) = _conditioning(tiny_dit)
    text_state = tiny_dit.text_norm(tiny_dit.text_encoder(ids, cond["text_mask"]))
    speaker_state = tiny_dit.speaker_norm(tiny_dit.speaker_encoder(speaker))
    attn = tiny_dit.blocks[1].attention
    # When K is recomputed by hand with the self-key k_norm
    k_text = attn.k_norm(attn.wk_text(text_state).view(2, 7, 4, 16))
    k_spk = attn.k_norm(attn.wk_speaker(speaker_state).view(2, 3, 4, 16))
    # Then the caches hold exactly those keys and the plain value projections
    torch.testing.assert_close(cond["text_kv"][1][0], k_text, rtol=0, atol=0)
    torch.testing.assert_close(cond["speaker_kv"][1][0], k_spk, rtol=0, atol=0)
    torch.testing.assert_close(cond["text_kv"][1][1], attn.wv_text(text_state).view(2, 7, 4, 16), rtol=0, atol=0)


def test_latent_keys_are_rotated_on_half_the_heads_at_positions_four_j(tiny_dit):
    # Given a clean latent buffer of 5 patches
    latents = torch.randn(1, 20, 80)
    # When the latent cache is built
    k, v = tiny_dit.get_kv_cache_latent(latents)[0]
    # Then K = RoPE_half(k_norm(wk_latent(state))) at positions 0, 4, 8, 12, 16
    state = tiny_dit.latent_norm(tiny_dit.latent_encoder(latents))
    attn = tiny_dit.blocks[0].attention
    raw = attn.k_norm(attn.wk_latent(state).view(1, 5, 4, 16))
    freqs = rope_frequencies(17, 16)[[0, 4, 8, 12, 16]]
    torch.testing.assert_close(k[:, :, :2], apply_rope(raw[:, :, :2], freqs), rtol=0, atol=0)
    torch.testing.assert_close(k[:, :, 2:], raw[:, :, 2:], rtol=0, atol=0)
    assert v.shape == (1, 5, 4, 16)


def test_speaker_encoder_is_causal_over_patches(tiny_dit):
    # Given a speaker reference of 4 patches
    latents = torch.randn(1, 16, 80)
    changed = latents.clone()
    changed[:, 12:] += 1.0  # only the last patch differs
    # When both are encoded
    before = tiny_dit.get_kv_cache_speaker(latents)
    after = tiny_dit.get_kv_cache_speaker(changed)
    # Then the K/V of earlier patches are unchanged and the last one changes
    for (k0, v0), (k1, v1) in zip(before, after, strict=True):
        torch.testing.assert_close(k0[:, :3], k1[:, :3], rtol=0, atol=1e-6)
        torch.testing.assert_close(v0[:, :3], v1[:, :3], rtol=0, atol=1e-6)
        assert not torch.allclose(k0[:, 3], k1[:, 3])


def test_speaker_patches_are_frame_major_groups_of_four_frames(tiny_dit):
    # Given latents whose first patch is permuted within itself
    latents = torch.randn(1, 8, 80)
    swapped = latents.clone()
    swapped[:, [0, 1]] = latents[:, [1, 0]]
    # When the in_proj sees the patches
    enc = tiny_dit.speaker_encoder
    # Then the patch vector is frames 0..3 concatenated (frame-major), divided by 6 after in_proj
    patch = latents[:, :4].reshape(1, 1, 320)
    expected = enc.in_proj(patch) / 6
    torch.testing.assert_close(enc.in_proj(latents.reshape(1, 2, 320))[:, :1] / 6, expected)
    assert not torch.allclose(enc(latents)[:, 0], enc(swapped)[:, 0])


def test_padded_text_ids_do_not_change_the_output(tiny_dit):
    # Given a batch whose second row has two padded text positions
    cond, (ids, _) = _conditioning(tiny_dit)
    x, t = _noise()
    other = ids.clone()
    other[-1, -2:] = torch.tensor([17, 99])
    cond_other = dict(cond, text_kv=tiny_dit.get_kv_cache_text(other, cond["text_mask"]))
    # When the model runs with either padding content
    # Then the velocity is the same
    torch.testing.assert_close(tiny_dit(x, t, **cond), tiny_dit(x, t, **cond_other), rtol=0, atol=1e-6)


def test_masked_conditioning_equals_absent_conditioning(tiny_dit):
    # Given the text group fully masked out (the CFG "no text" branch)
    cond, _ = _conditioning(tiny_dit)
    x, t = _noise()
    masked = dict(cond, text_mask=torch.zeros_like(cond["text_mask"]))
    empty = [(k[:, :0], v[:, :0]) for k, v in cond["text_kv"]]
    absent = dict(cond, text_kv=empty, text_mask=cond["text_mask"][:, :0])
    # When both run / Then they agree
    torch.testing.assert_close(tiny_dit(x, t, **masked), tiny_dit(x, t, **absent), rtol=1e-5, atol=1e-6)


def test_speaker_mask_is_read_at_the_first_frame_of_each_patch(tiny_dit):
    # Given a per-frame speaker mask that hides frames 1..3 of a patch, but not frame 0, and one hiding frame 4
    cond, _ = _conditioning(tiny_dit)
    x, t = _noise()
    ragged = cond["speaker_mask"].clone()
    ragged[:, 1:4] = False
    ragged[:, 4] = False
    patchwise = torch.ones_like(ragged)
    patchwise[:, 4:8] = False
    # When the model runs / Then only the first frame of each patch counts
    out_ragged = tiny_dit(x, t, **dict(cond, speaker_mask=ragged))
    torch.testing.assert_close(out_ragged, tiny_dit(x, t, **dict(cond, speaker_mask=patchwise)), rtol=0, atol=0)
    assert not torch.allclose(out_ragged, tiny_dit(x, t, **cond))


def test_latent_prefix_patches_are_visible_only_before_start_pos(tiny_dit):
    # Given a 16-frame buffer (4 patches) and the current block starting at frame 8
    cond, _ = _conditioning(tiny_dit)
    x, t = _noise(length=8)
    buffer = torch.randn(2, 16, 80)
    latent_kv = tiny_dit.get_kv_cache_latent(buffer)
    base = tiny_dit(x, t, **cond, latent_kv=latent_kv, start_pos=8)
    # When the K/V of invisible patches 2, 3 change, and then those of visible patch 0
    late = [(k.clone().index_fill_(1, torch.tensor([2, 3]), 5.0), v) for k, v in latent_kv]
    early = [(k.clone().index_fill_(1, torch.tensor([0]), 5.0), v) for k, v in latent_kv]
    # Then only the visible patch matters
    assert base.shape == (2, 8, 80)
    torch.testing.assert_close(tiny_dit(x, t, **cond, latent_kv=late, start_pos=8), base, rtol=0, atol=0)
    assert not torch.allclose(tiny_dit(x, t, **cond, latent_kv=early, start_pos=8), base)


def test_an_item_renders_the_same_alone_and_in_a_batch(tiny_dit):
    # Given a batch of two
    cond, _ = _conditioning(tiny_dit)
    x, t = _noise()
    both = tiny_dit(x, t, **cond)
    # When the first row runs alone
    first = {k: (v[:1] if torch.is_tensor(v) else [(a[:1], b[:1]) for a, b in v]) for k, v in cond.items()}
    # Then it matches its row of the batch
    torch.testing.assert_close(tiny_dit(x[:1], t[:1], **first), both[:1], rtol=1e-5, atol=1e-6)


def test_a_bf16_model_rounds_t_to_bf16_and_still_returns_float32(tiny_dit):
    # Given the tiny model in bf16, where 0.999 rounds to 1.0
    model = tiny_dit.to(torch.bfloat16)
    cond, _ = _conditioning(model)
    x, _ = _noise()
    # When t = 0.999 and t = 1.0 are used
    a = model(x, torch.full((2,), 0.999), **cond)
    b = model(x, torch.full((2,), 1.0), **cond)
    # Then the outputs are identical float32 tensors
    assert a.dtype == torch.float32
    assert torch.equal(a, b)
    assert cond["text_kv"][0][0].dtype == torch.bfloat16


def test_misuse_raises_named_errors(tiny_dit_config):
    # Given a model without blockwise weights
    model = EchoDiT(tiny_dit_config, blockwise=False)
    # Then a latent cache, a latent length off the patch grid and a short cache list are refused
    with pytest.raises(InvalidInput, match="blockwise"):
        model.get_kv_cache_latent(torch.zeros(1, 8, 80))
    with pytest.raises(InvalidInput, match="multiple of the patch size"):
        model.get_kv_cache_speaker(torch.zeros(1, 6, 80))
    cond, _ = _conditioning(model)
    x, t = _noise()
    with pytest.raises(InvalidInput, match="layers"):
        model(x, t, **dict(cond, text_kv=cond["text_kv"][:1]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_model_computes_the_same_velocity_on_cuda(tiny_dit):
    # Given the tiny model's CPU velocity, with CPU-built conditioning inputs
    cond, (ids, speaker) = _conditioning(tiny_dit)
    x, t = _noise()
    expected = tiny_dit(x, t, **cond)
    # When the model moves to CUDA and the caches are rebuilt from CPU inputs
    model = tiny_dit.to("cuda")
    cond_gpu = dict(
        cond,
        text_kv=model.get_kv_cache_text(ids, cond["text_mask"]),
        speaker_kv=model.get_kv_cache_speaker(speaker),
        latent_kv=model.get_kv_cache_latent(torch.randn(2, 8, 80)),
    )
    out = model(x, t, **cond_gpu)
    # Then the velocity is on CUDA, float32, and matches the CPU one (no visible prefix at start_pos 0)
    assert out.device.type == "cuda" and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-3, atol=1e-4)
