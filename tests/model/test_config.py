import dataclasses

import pytest

from echo_tts.config import SAMPLER_PRESETS, EchoDiTConfig, SamplerConfig, sampler_preset
from echo_tts.errors import InvalidSamplerConfig


def test_the_six_upstream_presets_are_frozen_sampler_configs():
    assert list(SAMPLER_PRESETS) == [
        "Independent-High-Speaker-CFG",
        "Independent-High-Speaker-CFG-Flat",
        "Independent-High-CFG",
        "Independent-High-CFG-Flat",
        "Independent-Low-CFG",
        "Independent-Low-CFG-Flat",
    ]
    preset = SAMPLER_PRESETS["Independent-High-CFG-Flat"]
    assert (preset.num_steps, preset.cfg_scale_text, preset.cfg_scale_speaker) == (40, 8.0, 8.0)
    assert (preset.truncation_factor, preset.rescale_k, preset.rescale_sigma) == (0.8, 1.2, 3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.num_steps = 10  # type: ignore[misc]


def test_rescale_k_of_one_means_off_as_in_the_upstream_ui():
    assert not SAMPLER_PRESETS["Independent-Low-CFG"].rescale_enabled
    assert SAMPLER_PRESETS["Independent-Low-CFG-Flat"].rescale_enabled


def test_overrides_go_through_replace_and_unknown_names_are_refused():
    base = sampler_preset("Independent-Low-CFG")
    assert base.replace(num_steps=20).num_steps == 20
    with pytest.raises(InvalidSamplerConfig, match="num_stepz"):
        base.replace(num_stepz=20)


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(InvalidSamplerConfig, match="Independent-Low-CFG"):
        sampler_preset("loud")


def test_force_speaker_needs_its_undo_point():
    with pytest.raises(InvalidSamplerConfig, match="speaker_kv_min_t"):
        SamplerConfig(speaker_kv_scale=1.5)


def test_dit_config_from_dict_rejects_unknown_keys():
    assert EchoDiTConfig.from_dict({"num_layers": 2}).num_layers == 2
    with pytest.raises(ValueError, match="num_layerz"):
        EchoDiTConfig.from_dict({"num_layerz": 2})
