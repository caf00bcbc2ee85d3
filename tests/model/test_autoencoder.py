"""Fish S1-DAC modules: lengths, causality, weight norm, VQ search, window mask, RoPE tables."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from echo_tts.autoencoder import FishS1DAC
from echo_tts.autoencoder_quantizer import VectorQuantize
from echo_tts.autoencoder_transformer import WindowLimitedTransformer, window_mask
from echo_tts.config import AE_DOWNSAMPLE_FACTOR, TINY_AUTOENCODER_CONFIG
from echo_tts.errors import InvalidAudio, InvalidInput
from echo_tts.layers import (
    CausalConv1d,
    WNConv1d,
    WNConvTranspose1d,
    apply_rope_table,
    causal_conv_transpose1d,
    rope_table,
)

FRAME = AE_DOWNSAMPLE_FACTOR


@pytest.fixture(scope="module")
def tiny_ae() -> FishS1DAC:
    torch.manual_seed(0)
    return FishS1DAC(TINY_AUTOENCODER_CONFIG).eval().requires_grad_(False)


def _audio(samples: int, seed: int = 1) -> torch.Tensor:
    return 0.3 * torch.randn(1, 1, samples, generator=torch.Generator().manual_seed(seed))


def test_encode_gives_one_latent_per_2048_samples_and_right_pads_the_rest(tiny_ae):
    # Given audio whose length is not a multiple of 2048
    audio = _audio(2 * FRAME + 904)
    # When it is encoded, and encoded again after explicit zero right-padding to 3 frames
    z_q = tiny_ae.encode_zq(audio)
    padded = tiny_ae.encode_zq(F.pad(audio, (0, 3 * FRAME - audio.shape[-1])))
    # Then there are ceil(N / 2048) frames of latent_dim channels, and padding was implicit
    assert z_q.shape == (1, TINY_AUTOENCODER_CONFIG.latent_dim, 3)
    assert torch.equal(z_q, padded)


def test_decode_gives_2048_samples_per_latent_in_the_tanh_range(tiny_ae):
    # Given a batch of two z_q sequences of 5 frames
    z_q = torch.randn(2, TINY_AUTOENCODER_CONFIG.latent_dim, 5)
    # When they are decoded
    audio = tiny_ae.decode_zq(z_q)
    # Then the waveform has 2048 samples per frame and stays within [-1, 1]
    assert audio.shape == (2, 1, 5 * FRAME)
    assert audio.abs().max() <= 1.0


def test_changing_later_audio_does_not_change_earlier_latents(tiny_ae):
    # Given audio and a copy whose samples from frame 4 on are different
    audio = _audio(8 * FRAME)
    changed = audio.clone()
    changed[..., 4 * FRAME :] = _audio(4 * FRAME, seed=7)
    # When both are encoded
    before, after = tiny_ae.encode_codes(audio), tiny_ae.encode_codes(changed)
    z_before, z_after = tiny_ae.encode_zq(audio), tiny_ae.encode_zq(changed)
    # Then frames 0-3 are the same and later frames differ
    assert torch.equal(before[..., :4], after[..., :4])
    torch.testing.assert_close(z_before[..., :4], z_after[..., :4], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(z_before[..., 4:], z_after[..., 4:])


def test_changing_later_latents_does_not_change_earlier_audio(tiny_ae):
    # Given z_q and a copy whose frames from 3 on are different
    z_q = torch.randn(1, TINY_AUTOENCODER_CONFIG.latent_dim, 6)
    changed = z_q.clone()
    changed[..., 3:] = torch.randn(1, TINY_AUTOENCODER_CONFIG.latent_dim, 3)
    # When both are decoded
    before, after = tiny_ae.decode_zq(z_q), tiny_ae.decode_zq(changed)
    # Then the first 3 * 2048 samples agree and the rest does not
    torch.testing.assert_close(before[..., : 3 * FRAME], after[..., : 3 * FRAME], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(before[..., 3 * FRAME :], after[..., 3 * FRAME :])


def test_bad_shapes_raise_named_errors(tiny_ae):
    # Given inputs without the channel axis, or z_q of the wrong width
    # When they are passed in, Then named errors explain the expected shapes
    with pytest.raises(InvalidAudio, match="batch, 1, samples"):
        tiny_ae.encode_zq(torch.zeros(1, 4096))
    with pytest.raises(InvalidInput, match="z_q"):
        tiny_ae.decode_zq(torch.zeros(1, 7, 3))


def test_weight_norm_is_g_times_v_over_its_norm_along_axis_0():
    # Given a WN conv (weight (C_out, C_in, k)) and a WN transposed conv (weight (C_in, C_out, k))
    conv, transposed = WNConv1d(3, 5, 4), WNConvTranspose1d(6, 2, 4, stride=2)
    for layer, axis0 in ((conv, 5), (transposed, 6)):
        pair = layer.parametrizations["weight"]
        with torch.no_grad():
            pair.original0.copy_(torch.rand_like(pair.original0) + 0.5)
        # When the weight is formed
        g, v = pair.original0, pair.original1
        # Then it equals g * v / ||v|| with the norm over all axes but 0, and g has axis-0 size
        expected = g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1)
        assert g.shape == (axis0, 1, 1)
        torch.testing.assert_close(layer.weight, expected)


def test_causal_conv_pads_left_and_rounds_strided_lengths_up():
    # Given a stride-4 kernel-8 causal conv and a stride-1 dilated one
    strided, dilated = CausalConv1d(2, 3, 8, stride=4), CausalConv1d(2, 2, 7, dilation=3)
    x = torch.randn(1, 2, 21)
    # When applied
    y = strided(x)
    # Then lengths are ceil(L / s) and L, and output t only sees inputs before (t + 1) * s
    assert y.shape[-1] == 6 and dilated(x).shape[-1] == 21
    x2 = x.clone()
    x2[..., 12:] += 1.0
    torch.testing.assert_close(strided(x2)[..., :3], y[..., :3])


def test_causal_transposed_conv_matches_the_trimmed_torch_transposed_conv():
    # Given kernels k = s, k = 2s (the matmul path) and k = 5 (the torch path)
    for kernel, stride in ((2, 2), (4, 2), (16, 8), (5, 2)):
        x, w, b = torch.randn(2, 3, 9), torch.randn(3, 4, kernel), torch.randn(4)
        # When computed
        y = causal_conv_transpose1d(x, w, b, stride)
        # Then it is the transposed conv with its last k - s samples dropped
        reference = F.conv_transpose1d(x, w, b, stride=stride)[..., : 9 * stride]
        torch.testing.assert_close(y, reference)


def test_vq_picks_the_cosine_nearest_code_not_the_euclidean_nearest():
    # Given a codebook with a long vector along x, a short vector near x, and a duplicate direction of x
    vq = VectorQuantize(input_dim=4, codebook_size=4, codebook_dim=2)
    with torch.no_grad():
        vq.codebook.weight.copy_(torch.tensor([[0.0, 1.0], [10.0, 0.0], [0.9, 0.5], [3.0, 0.0]]))
    # When (1, 0.05) is looked up (Euclidean-nearest is row 2), and (0, 2) and (-1, 0.1)
    z_e = torch.tensor([[1.0, 0.0, -1.0], [0.05, 2.0, 0.1]])[None]  # (1, D=2, T=3)
    codes = vq.nearest_codes(z_e)
    # Then codes follow direction only, ties go to the first row, and the raw row is returned
    assert codes.tolist() == [[1, 0, 0]]
    assert torch.equal(vq.code_vectors(codes)[0, :, 0], torch.tensor([10.0, 0.0]))


def test_window_mask_lets_query_i_see_keys_i_minus_window_plus_1_to_i():
    # Given a window of 3 over 6 positions
    mask = window_mask(6, 3)
    # Then row i is True exactly for max(0, i - 2) <= j <= i
    for i in range(6):
        assert mask[i].nonzero().flatten().tolist() == list(range(max(0, i - 2), i + 1))


def test_a_one_layer_transformer_ignores_inputs_outside_the_window():
    # Given a one-layer windowed transformer (window 4) and inputs differing only at position 0
    torch.manual_seed(3)
    layer = WindowLimitedTransformer(8, num_layers=1, num_heads=2, ffn=16, window=4, block_size=32, eps=1e-5)
    x = torch.randn(1, 8, 10)
    changed = x.clone()
    changed[..., 0] += 5.0
    # When both run
    before, after = layer(x), layer(changed)
    # Then positions 0-3 (which see position 0) change and positions 4+ do not
    assert not torch.allclose(before[..., 3], after[..., 3])
    torch.testing.assert_close(before[..., 4:], after[..., 4:])


def test_transformer_refuses_sequences_longer_than_its_rope_table():
    # Given a transformer with 16 positions
    layer = WindowLimitedTransformer(8, num_layers=1, num_heads=2, ffn=16, window=4, block_size=16, eps=1e-5)
    # When 17 frames arrive, Then a named error asks for chunking
    with pytest.raises(InvalidInput, match="16 positions"):
        layer(torch.randn(1, 8, 17))


def test_rope_table_is_the_float32_construction_rounded_to_bf16():
    # Given the table for 100 positions of head_dim 64
    table = rope_table(100, 64)
    # Then it is bf16 (P, 32, 2) with cos/sin of pos / 10000^(2i/64) computed in float32
    inv = 1.0 / (10000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    angles = torch.arange(100, dtype=torch.float32)[:, None] * inv[None]
    assert table.dtype == torch.bfloat16 and table.shape == (100, 32, 2)
    assert torch.equal(table, torch.stack([angles.cos(), angles.sin()], dim=-1).to(torch.bfloat16))


def test_rope_rotates_adjacent_pairs_in_float32_and_casts_back():
    # Given a bf16 input of one head (D=4) at two positions
    x = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]], [[1.0, 0.0, 0.0, 1.0]]]], dtype=torch.bfloat16)
    table = rope_table(2, 4)
    # When rotated
    y = apply_rope_table(x, table)
    # Then position 0 is unchanged, the dtype is kept, and pair (a, b) -> (a cos - b sin, b cos + a sin)
    cos, sin = table[1, 0, 0].float(), table[1, 0, 1].float()
    assert y.dtype == torch.bfloat16 and torch.equal(y[0, 0], x[0, 0])
    expected = torch.stack([cos, sin]).to(torch.bfloat16)
    assert torch.equal(y[0, 1, 0, :2], expected)
