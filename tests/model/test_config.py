import dataclasses
import inspect
import subprocess
import sys

import pytest

from echo_tts.config import (
    DEFAULT_AE_REPO,
    DEFAULT_MODEL_REPO,
    SAMPLER_PRESETS,
    EchoDiTConfig,
    SamplerConfig,
    sampler_preset,
)
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


def test_the_published_repos_are_named_once_in_the_torch_free_config():
    # Given a fresh interpreter that imports only echo_tts.config
    code = "import sys, echo_tts.config as c; print(c.DEFAULT_MODEL_REPO, c.DEFAULT_AE_REPO, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # Then it names the published repos without importing torch
    assert out.split() == ["jordand/echo-tts-base", "jordand/fish-s1-dac-min", "False"]


def test_every_loader_defaults_to_the_config_repos():
    from echo_tts import autoencoder_weights, cli, pipeline, upstream, weights

    def default(function, name: str):
        return inspect.signature(function).parameters[name].default

    # Then the DiT/PCA loaders default to DEFAULT_MODEL_REPO and the AE loaders to DEFAULT_AE_REPO
    for function in (weights.load_echo_dit, weights.load_pca):
        assert default(function, "repo_or_dir") == DEFAULT_MODEL_REPO
    assert default(autoencoder_weights.load_autoencoder, "repo_or_dir") == DEFAULT_AE_REPO
    for function in (upstream.load_model_from_hf, upstream.load_pca_state_from_hf):
        assert default(function, "repo_id") == DEFAULT_MODEL_REPO
    assert default(upstream.load_fish_ae_from_hf, "repo_id") == DEFAULT_AE_REPO
    assert default(pipeline.Pipeline.from_pretrained, "model_repo") == DEFAULT_MODEL_REPO
    assert default(pipeline.Pipeline.from_pretrained, "ae_repo") == DEFAULT_AE_REPO
    args = cli.build_parser().parse_args(["encode-speaker", "ref.wav", "-o", "voice.safetensors"])
    assert (args.model, args.ae) == (DEFAULT_MODEL_REPO, DEFAULT_AE_REPO)
