"""The sampler against the equations of spec §6: schedule, CFG batch, guidance, rescale,
Euler, truncation and force-speaker, checked on what a real tiny EchoDiT sees and returns."""

import pytest
import torch
from sampler_spy import SpyDiT, make_conditioning

from echo_tts.config import SamplerConfig
from echo_tts.sampler import cfg_active, rescale_velocity, sample, timestep_schedule

TEXTS = ["[S1] Hello there.", "[S1] A longer second line of text."]
SMALL = SamplerConfig(num_steps=6, sequence_length=8, truncation_factor=None)


def _upstream_noise(seed: int, length: int) -> torch.Tensor:
    return torch.randn((1, length, 80), dtype=torch.float32, generator=torch.Generator().manual_seed(seed))


def test_the_schedule_is_float32_linspace_times_0_999():
    # Given 40 steps / When the schedule is built
    t = timestep_schedule(40)
    # Then it is float32, starts at 0.999, ends at 0, and matches the spec's landmarks
    assert t.dtype == torch.float32 and t.shape == (41,)
    assert t[0].item() == pytest.approx(0.999) and t[-1].item() == 0.0
    assert torch.equal(t, torch.linspace(1.0, 0.0, 41, dtype=torch.float32) * 0.999)
    assert t[19].item() == pytest.approx(0.524475) and t[20] == torch.tensor(0.4995)
    # And with the default window steps 0-19 use CFG, steps 20-39 do not
    assert [cfg_active(v, SamplerConfig()) for v in t[:-1]] == [True] * 20 + [False] * 20


def test_cfg_steps_run_one_3b_batch_grouped_by_branch_with_the_specified_masks(tiny_dit):
    # Given two items and a window covering only the steps with t >= 0.5
    spy = SpyDiT(tiny_dit)
    cond = make_conditioning(tiny_dit, TEXTS, [8, 4], pad_to=8)
    # When sampling 6 steps
    sample(spy, cond, SMALL, seeds=[1, 2])
    schedule = timestep_schedule(6)
    in_window = [bool(t >= 0.5) for t in schedule[:-1]]
    assert in_window == [True, True, True, False, False, False]  # t = 0.999, 0.8325, 0.666, 0.4995, ...
    for call, cfg, t in zip(spy.calls, in_window, schedule[:-1], strict=True):
        # Then CFG steps have 3B rows [cond | no text | no speaker] with shared x and t
        rows = 6 if cfg else 2
        assert call.x.shape == (rows, 8, 80) and call.t.shape == (rows,)
        assert torch.equal(call.t, torch.full((rows,), t.item()))
        if cfg:
            m_text, m_spk = cond.text_mask, cond.speaker_mask
            assert torch.equal(call.text_mask, torch.cat([m_text, torch.zeros_like(m_text), m_text]))
            assert torch.equal(call.speaker_mask, torch.cat([m_spk, m_spk, torch.zeros_like(m_spk)]))
            assert torch.equal(call.x[:2], call.x[2:4]) and torch.equal(call.x[:2], call.x[4:])
            k0 = cond.speaker_kv[0][0]
            assert torch.equal(call.speaker_kv[0][0], torch.cat([k0, k0, k0]))
        else:
            assert torch.equal(call.text_mask, cond.text_mask)
            assert torch.equal(call.speaker_mask, cond.speaker_mask)


def test_steps_above_cfg_max_t_run_without_guidance(tiny_dit):
    # Given a window [0.2, 0.8] / When sampling / Then only steps with t inside it use 3B rows
    spy = SpyDiT(tiny_dit)
    config = SMALL.replace(cfg_min_t=0.2, cfg_max_t=0.8)
    sample(spy, make_conditioning(tiny_dit, TEXTS[:1], [8]), config, seeds=[0])
    t = timestep_schedule(6)[:-1]
    assert [c.x.shape[0] for c in spy.calls] == [3 if 0.2 <= v <= 0.8 else 1 for v in t.tolist()]


def _upstream_rescale(v, x, t, k, sigma):
    # spec §6.4 written out: snr, rho, implied noise, rescaled velocity, all float32
    snr = (1 - t) ** 2 / (t**2)
    ratio = (snr * sigma**2 + 1) / (snr * sigma**2 / k + 1)
    eps = (1 - t) * v + x
    return 1 / (1 - t) * (ratio * eps - x)


@pytest.mark.parametrize("preset", ["Independent-High-CFG-Flat", "Independent-Low-CFG"])
def test_the_trajectory_follows_guidance_rescale_euler_and_truncation(tiny_dit, preset):
    # Given a preset (truncation 0.8 + rescale, or neither) and the recorded model outputs
    from echo_tts.config import sampler_preset

    config = sampler_preset(preset).replace(num_steps=6, sequence_length=8)
    spy = SpyDiT(tiny_dit)
    cond = make_conditioning(tiny_dit, TEXTS[:1], [8])
    # When sampling
    result = sample(spy, cond, config, seeds=[5])
    # Then replaying the equations on those outputs reproduces every input and the result exactly
    schedule = timestep_schedule(6)
    x = _upstream_noise(5, 8)
    if config.truncation_factor is not None:
        x = x * config.truncation_factor
    for i, call in enumerate(spy.calls):
        t, t_next = schedule[i], schedule[i + 1]
        assert torch.equal(call.x[:1], x)
        if call.out.shape[0] == 3:
            v_c, v_t, v_s = call.out.chunk(3)
            v = v_c + config.cfg_scale_text * (v_c - v_t) + config.cfg_scale_speaker * (v_c - v_s)
        else:
            v = call.out
        if config.rescale_enabled:
            v = _upstream_rescale(v, x, t, config.rescale_k, config.rescale_sigma)
        x = x + v * (t_next - t)
    assert torch.equal(result, x)


def test_rescale_matches_the_algebra_and_is_near_identity_for_k_of_one():
    # Given random v and x at a few t
    generator = torch.Generator().manual_seed(0)
    v, x = torch.randn((2, 4, 80), generator=generator), torch.randn((2, 4, 80), generator=generator)
    for t_value in (0.999, 0.75, 0.3):
        t = torch.tensor(t_value, dtype=torch.float32)
        # When rescaled / Then it equals rho v + (rho - 1) x / (1 - t) up to float32 cancellation
        snr = (1 - t_value) ** 2 / t_value**2
        rho = (snr * 9 + 1) / (snr * 9 / 1.2 + 1)
        expected = rho * v.double() + (rho - 1) * x.double() / (1 - t_value)
        assert torch.allclose(rescale_velocity(v, x, t, 1.2, 3.0).double(), expected, rtol=1e-3, atol=1e-3)
        # And k = 1 is the identity only up to rounding
        assert torch.allclose(rescale_velocity(v, x, t, 1.0, 3.0), v, atol=2e-3)


def _speaker_scale_seen(call, base_kv, layer: int) -> float:
    k_seen, v_seen = call.speaker_kv[layer]
    k_base, v_base = base_kv[layer]
    rows = k_seen.shape[0] // k_base.shape[0]
    k_base, v_base = torch.cat([k_base] * rows), torch.cat([v_base] * rows)
    scale_k = (k_seen.double() / k_base.double()).mean().item()
    assert torch.allclose(k_seen, k_base * scale_k, rtol=1e-5) and torch.allclose(v_seen, v_base * scale_k, rtol=1e-5)
    return scale_k


def test_force_speaker_scales_k_and_v_of_the_first_layers_until_the_tau_crossing(tiny_dit):
    # Given s = 1.5 on layer 0 only, undone where t >= 0.7 > t_next
    spy = SpyDiT(tiny_dit)
    cond = make_conditioning(tiny_dit, TEXTS, [8, 8])
    base = [(k.clone(), v.clone()) for k, v in cond.speaker_kv]
    config = SMALL.replace(speaker_kv_scale=1.5, speaker_kv_max_layers=1, speaker_kv_min_t=0.7)
    # When sampling
    sample(spy, cond, config, seeds=[0, 1])
    # Then steps with t >= 0.7 see K and V of layer 0 times 1.5 in every CFG branch, later steps 1.0
    schedule = timestep_schedule(6)
    for call, t in zip(spy.calls, schedule, strict=False):
        expected = 1.5 if t >= 0.7 else 1.0
        assert _speaker_scale_seen(call, base, 0) == pytest.approx(expected, rel=1e-6)
        assert _speaker_scale_seen(call, base, 1) == pytest.approx(1.0, rel=1e-7)
    # And the caller's conditioning is untouched
    assert all(
        torch.equal(k, kb) and torch.equal(v, vb) for (k, v), (kb, vb) in zip(cond.speaker_kv, base, strict=True)
    )


@pytest.mark.parametrize("tau", [1.0, 0.0])
def test_force_speaker_without_a_crossing_is_never_undone(tiny_dit, tau):
    # Given tau above t_0 = 0.999 or at the final t = 0 / When sampling
    spy = SpyDiT(tiny_dit)
    cond = make_conditioning(tiny_dit, TEXTS[:1], [8])
    config = SMALL.replace(speaker_kv_scale=1.25, speaker_kv_min_t=tau)
    sample(spy, cond, config, seeds=[0])
    # Then every step, in every layer, sees the scaled K/V
    for call in spy.calls:
        for layer in range(len(cond.speaker_kv)):
            assert _speaker_scale_seen(call, cond.speaker_kv, layer) == pytest.approx(1.25, rel=1e-6)


def test_truncation_multiplies_the_initial_noise(tiny_dit):
    # Given truncation 0.5 / When sampling / Then the first input is the seeded noise times 0.5
    spy = SpyDiT(tiny_dit)
    sample(spy, make_conditioning(tiny_dit, TEXTS[:1], [8]), SMALL.replace(truncation_factor=0.5), seeds=[9])
    assert torch.equal(spy.calls[0].x[:1], _upstream_noise(9, 8) * 0.5)
