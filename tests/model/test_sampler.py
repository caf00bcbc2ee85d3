"""Sampler behaviour on a real tiny EchoDiT: seeds, batching, blockwise continuation, progress,
cancellation, dtypes, input errors and the end-of-speech heuristic (spec §6, §7)."""

import pytest
import torch
from sampler_spy import SpyDiT, make_conditioning, speaker_inputs

from echo_tts.config import SamplerConfig, sampler_preset
from echo_tts.errors import Cancelled, InvalidInput
from echo_tts.sampler import encode_conditioning, find_flattening_point, sample, sample_blockwise
from echo_tts.text import encode_texts

TEXTS = ["[S1] Hello there.", "[S1] A longer second line of text."]
CONFIG = sampler_preset("Independent-High-CFG-Flat").replace(num_steps=5, sequence_length=12)


def test_the_same_seed_gives_the_same_latents_and_another_seed_other_latents(tiny_dit):
    # Given one conditioning
    cond = make_conditioning(tiny_dit, TEXTS[:1], [8])
    # When sampled twice with seed 3 and once with seed 4
    first, again, other = (sample(tiny_dit, cond, CONFIG, seeds=[s]) for s in (3, 3, 4))
    # Then the latents are (B, S, 80) float32, identical for equal seeds and different otherwise
    assert first.shape == (1, 12, 80) and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_an_item_renders_the_same_alone_and_in_a_padded_batch(tiny_dit):
    # Given two items with different text and speaker lengths, batched with padding and masks
    batch_cond = make_conditioning(tiny_dit, TEXTS, [16, 8], seed=10)
    # When the batch and each item alone are sampled with the same per-item seeds
    together = sample(tiny_dit, batch_cond, CONFIG, seeds=[21, 22])
    alone = [
        sample(tiny_dit, make_conditioning(tiny_dit, [TEXTS[i]], [[16, 8][i]], seed=10 + i), CONFIG, seeds=[21 + i])
        for i in range(2)
    ]
    # Then each row equals its solo rendering up to kernel rounding (which CFG 8 and the rescale's
    # 1/(1-t) = 1000 at t = 0.999 amplify to ~1e-5)
    for i in range(2):
        assert torch.allclose(together[i : i + 1], alone[i], atol=1e-4, rtol=1e-4)


def test_a_batch_of_one_draws_its_noise_exactly_like_upstream(tiny_dit):
    # Given a batch of one / When sampled with seeds=[7] and with the upstream-style int seed 7
    spy = SpyDiT(tiny_dit)
    cond = make_conditioning(tiny_dit, TEXTS[:1], [8])
    per_item = sample(spy, cond, SamplerConfig(num_steps=2, sequence_length=12), seeds=[7])
    shared = sample(tiny_dit, cond, SamplerConfig(num_steps=2, sequence_length=12), seeds=7)
    # Then both start from randn((1, S, 80)) of a generator seeded with 7 and agree
    noise = torch.randn((1, 12, 80), generator=torch.Generator().manual_seed(7))
    assert torch.equal(spy.calls[0].x[:1], noise)
    assert torch.equal(per_item, shared)


def test_an_int_seed_draws_the_whole_batch_from_one_generator_like_upstream(tiny_dit):
    # Given two items and a single int seed / When sampled
    spy = SpyDiT(tiny_dit)
    sample(spy, make_conditioning(tiny_dit, TEXTS, [8, 8]), CONFIG.replace(truncation_factor=None), seeds=5)
    # Then the initial noise is one (2, S, 80) draw
    noise = torch.randn((2, 12, 80), generator=torch.Generator().manual_seed(5))
    assert torch.equal(spy.calls[0].x[:2], noise)


def test_a_bf16_model_gets_x_and_t_in_bf16_while_the_state_stays_float32(tiny_dit):
    # Given a bf16 model / When sampling
    spy = SpyDiT(tiny_dit.to(torch.bfloat16))
    out = sample(spy, make_conditioning(spy, TEXTS[:1], [8]), CONFIG, seeds=[0])
    # Then the model sees bf16 x and t (0.999 rounds to 1.0) and the result is float32
    assert spy.calls[0].x.dtype == torch.bfloat16 and spy.calls[0].t.dtype == torch.bfloat16
    assert spy.calls[0].t[0].item() == 1.0
    assert out.dtype == torch.float32


def test_progress_is_reported_after_every_step_in_order(tiny_dit):
    # Given a progress callback / When sampling 5 steps
    seen = []
    sample(tiny_dit, make_conditioning(tiny_dit, TEXTS[:1], [8]), CONFIG, seeds=[0], progress=lambda *a: seen.append(a))
    # Then it saw (1, 5) .. (5, 5)
    assert seen == [(step, 5) for step in range(1, 6)]


def test_cancel_is_checked_before_every_step_and_raises_cancelled(tiny_dit):
    # Given a cancel hook that answers True on its third question
    spy, asked, seen = SpyDiT(tiny_dit), [], []

    def should_cancel():
        asked.append(True)
        return len(asked) == 3

    # When sampling / Then Cancelled is raised before the third step ran
    with pytest.raises(Cancelled, match="step 3 of 5"):
        sample(
            spy,
            make_conditioning(tiny_dit, TEXTS[:1], [8]),
            CONFIG,
            seeds=[0],
            progress=lambda *a: seen.append(a),
            should_cancel=should_cancel,
        )
    assert len(spy.calls) == 2 and seen == [(1, 5), (2, 5)]


def test_blockwise_keeps_the_continuation_bit_exactly_and_appends_every_block(tiny_dit):
    # Given a 4-frame continuation and blocks of 8 and 4
    cond = make_conditioning(tiny_dit, TEXTS, [8, 8])
    prefix = torch.randn((2, 4, 80), generator=torch.Generator().manual_seed(1))
    spy, seen = SpyDiT(tiny_dit), []
    # When sampled blockwise
    out = sample_blockwise(
        spy, cond, CONFIG, [8, 4], seeds=[1, 2], continuation=prefix, progress=lambda *a: seen.append(a)
    )
    # Then the buffer is (B, P + 12, 80) with the prefix unchanged, and progress counts both blocks
    assert out.shape == (2, 16, 80) and out.dtype == torch.float32
    assert torch.equal(out[:, :4], prefix)
    assert seen == [(step, 10) for step in range(1, 11)]
    # And each block's calls start at its offset, with 3B latent rows for CFG steps and B otherwise
    assert [c.start_pos for c in spy.calls] == [4] * 5 + [12] * 5
    assert all(c.latent_rows == c.x.shape[0] for c in spy.calls)
    # And the latent encoder saw the whole buffer, 3 stacked copies, the first block already written
    assert [b.shape for b in spy.latent_buffers] == [(6, 16, 80)] * 2
    assert torch.equal(spy.latent_buffers[1][:2, 4:12], out[:, 4:12])


def test_blockwise_draws_each_block_from_the_items_own_generator_in_order(tiny_dit):
    # Given two blocks and per-item seeds, no truncation / When sampled blockwise
    spy = SpyDiT(tiny_dit)
    config = CONFIG.replace(truncation_factor=None)
    sample_blockwise(spy, make_conditioning(tiny_dit, TEXTS, [8, 8]), config, [4, 8], seeds=[3, 4])
    # Then block k's noise for item i is the k-th draw of generator(seed_i)
    generators = [torch.Generator().manual_seed(s) for s in (3, 4)]
    for first_call, size in ((spy.calls[0], 4), (spy.calls[5], 8)):
        expected = torch.cat([torch.randn((1, size, 80), generator=g) for g in generators])
        assert torch.equal(first_call.x[:2], expected)


def test_blockwise_without_continuation_returns_only_the_blocks(tiny_dit):
    out = sample_blockwise(tiny_dit, make_conditioning(tiny_dit, TEXTS[:1], [8]), CONFIG, [4, 4], seeds=[0])
    assert out.shape == (1, 8, 80)


def test_blockwise_force_speaker_is_reapplied_per_block_and_compounds_without_undo(tiny_dit):
    # Given s = 2 that is never undone (tau = 1.0) / When two blocks are sampled
    spy = SpyDiT(tiny_dit)
    cond = make_conditioning(tiny_dit, TEXTS[:1], [8])
    config = CONFIG.replace(speaker_kv_scale=2.0, speaker_kv_min_t=1.0)
    sample_blockwise(spy, cond, config, [4, 4], seeds=[0])
    # Then block 1 sees K*2 and block 2 sees K*4
    k_base = cond.speaker_kv[0][0]
    assert torch.equal(spy.calls[0].speaker_kv[0][0][:1], k_base * 2)
    assert torch.equal(spy.calls[5].speaker_kv[0][0][:1], k_base * 4)


@pytest.mark.parametrize(
    ("blocks", "continuation", "match"),
    [
        ([], None, "block_sizes"),
        ([4, 0], None, "block_sizes"),
        ([6], None, "multiple of 4"),
        ([4], torch.zeros((2, 4, 80)), "continuation"),
    ],
)
def test_blockwise_refuses_bad_blocks_and_continuations(tiny_dit, blocks, continuation, match):
    cond = make_conditioning(tiny_dit, TEXTS[:1], [8])
    with pytest.raises(InvalidInput, match=match):
        sample_blockwise(tiny_dit, cond, CONFIG, blocks, seeds=[0], continuation=continuation)


def test_one_seed_per_item_is_required(tiny_dit):
    with pytest.raises(InvalidInput, match="2 seeds for a batch of 1"):
        sample(tiny_dit, make_conditioning(tiny_dit, TEXTS[:1], [8]), CONFIG, seeds=[1, 2])


@pytest.mark.parametrize(
    ("latents", "mask", "match"),
    [
        ((1, 6, 80), (1, 6), "multiple of 4"),
        ((1, 8, 64), (1, 8), r"\(B, T, 80\)"),
        ((1, 8, 80), (1, 4), "mask"),
        ((2, 8, 80), (2, 8), "speaker rows"),
    ],
)
def test_encode_conditioning_refuses_mismatched_speaker_inputs(tiny_dit, latents, mask, match):
    with pytest.raises(InvalidInput, match=match):
        encode_conditioning(tiny_dit, encode_texts(["hi"]), torch.zeros(latents), torch.ones(mask, dtype=torch.bool))


def test_encode_conditioning_gives_per_layer_caches_and_masks(tiny_dit, tiny_dit_config):
    latents, mask = speaker_inputs([8, 4], pad_to=8)
    cond = encode_conditioning(tiny_dit, encode_texts(TEXTS), latents, mask)
    assert len(cond.text_kv) == len(cond.speaker_kv) == tiny_dit_config.num_layers
    assert cond.speaker_kv[0][0].shape == (2, 2, tiny_dit_config.num_heads, tiny_dit_config.head_dim)
    assert cond.batch_size == 2 and torch.equal(cond.speaker_mask, mask)


def _reference_flattening_point(latents):
    padded = torch.cat([latents, torch.zeros((20, 80))])
    for i in range(latents.shape[0]):
        window = padded[i : i + 20]
        if window.std() < 0.05 and (window.mean() - 0).abs() < 0.1:
            return i
    return latents.shape[0]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: torch.zeros((30, 80)), 0),  # silence from the start
        (lambda: torch.cat([torch.ones((10, 80)), torch.zeros((20, 80))]), 10),  # speech then silence
        (lambda: torch.full((30, 80), 0.2), 29),  # a steady hum: only the window over the appended zeros
        (lambda: torch.randn((30, 80), generator=torch.Generator().manual_seed(0)), 30),  # never flat
        (lambda: torch.zeros((0, 80)), 0),
    ],
)
def test_find_flattening_point_follows_the_window_rule(make, expected):
    latents = make()
    assert find_flattening_point(latents) == expected == _reference_flattening_point(latents)


def test_find_flattening_point_agrees_with_the_upstream_loop_on_noisy_tails():
    generator = torch.Generator().manual_seed(3)
    for scale in (0.01, 0.03, 0.05, 0.08):
        latents = torch.cat(
            [torch.randn((40, 80), generator=generator), scale * torch.randn((60, 80), generator=generator)]
        )
        assert find_flattening_point(latents) == _reference_flattening_point(latents)


def test_find_flattening_point_wants_one_item_of_latents():
    with pytest.raises(InvalidInput, match=r"\(S, 80\)"):
        find_flattening_point(torch.zeros((1, 30, 80)))
