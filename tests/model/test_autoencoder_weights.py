"""Fish S1-DAC checkpoints: the published layout, strict loading, both weight-norm namings, dtypes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from echo_tts import autoencoder_weights
from echo_tts.autoencoder import FishS1DAC
from echo_tts.autoencoder_weights import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    checkpoint_layout,
    load_autoencoder,
    save_autoencoder,
)
from echo_tts.config import AUTOENCODER_PUBLISHED_FIELDS, TINY_AUTOENCODER_CONFIG, AutoencoderConfig
from echo_tts.errors import CheckpointMismatch, InvalidInput, WeightsError, WeightsNotFound

PUBLISHED = Path(__file__).parent / "data" / "fish_s1_dac_state_dict_keys.json"
DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "BOOL": torch.bool}
PUBLISHED_CONFIG = {  # jordand/fish-s1-dac-min config.json (spec §1.4)
    "sample_rate": 44100,
    "encoder_dim": 64,
    "encoder_rates": [2, 4, 8, 8],
    "latent_dim": 1024,
    "decoder_dim": 1536,
    "decoder_rates": [8, 8, 4, 2],
    "n_codebooks": 9,
    "codebook_size": 1024,
    "codebook_dim": 8,
    "semantic_codebook_size": 4096,
    "causal": True,
}
SMALL_TABLES = dataclasses.replace(  # short RoPE tables so that causal masks stay small
    TINY_AUTOENCODER_CONFIG, encoder_transformer_block_size=256, quantizer_transformer_block_size=64
)


@pytest.fixture(scope="module")
def tiny_ae() -> FishS1DAC:
    torch.manual_seed(5)
    return FishS1DAC(TINY_AUTOENCODER_CONFIG).eval().requires_grad_(False)


@pytest.fixture
def saved(tmp_path: Path, tiny_ae: FishS1DAC) -> Path:
    return save_autoencoder(tiny_ae, tmp_path / "fish-s1-dac-min")


def _rewrite(directory: Path, edit) -> None:
    path = directory / WEIGHTS_FILE
    state = load_file(path)
    edit(state)
    save_file(state, path)


def _outputs(ae: FishS1DAC) -> tuple[torch.Tensor, torch.Tensor]:
    audio = 0.3 * torch.randn(1, 1, 3 * 2048 + 100, generator=torch.Generator().manual_seed(2))
    z_q = torch.randn(1, ae.config.latent_dim, 4, generator=torch.Generator().manual_seed(3))
    return ae.encode_zq(audio), ae.decode_zq(z_q)


def test_full_size_codec_has_exactly_the_541_published_tensors():
    # Given the published names, shapes and dtypes, and the full-size codec built on meta
    published = json.loads(PUBLISHED.read_text())["tensors"]
    expected = {name: (tuple(t["shape"]), DTYPES[t["dtype"]]) for name, t in published.items()}
    with torch.device("meta"):
        ae = FishS1DAC(AutoencoderConfig())
    # When the checkpoint layout and the module's own state are listed
    layout = checkpoint_layout(AutoencoderConfig())
    own = {name: (tuple(t.shape), t.dtype) for name, t in ae.state_dict().items()}
    # Then the layout is the published one, and the module holds all of it except the unused masks
    assert len(layout) == 541 and layout == expected
    assert own == {k: v for k, v in expected.items() if not k.endswith("causal_mask")}
    assert sum(p.numel() for p in ae.parameters()) == 391_430_530


def test_save_then_load_through_a_plain_directory_gives_identical_outputs(saved, tiny_ae):
    # Given a tiny codec saved to a directory
    # When it is loaded back with the defaults
    loaded = load_autoencoder(saved)
    # Then the files are the published pair, the RoPE tables stay bf16 and outputs are identical
    assert sorted(p.name for p in saved.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    assert loaded.dtype == torch.float32 and not loaded.training
    assert all(t.freqs_cis.dtype == torch.bfloat16 for t in loaded.transformers())
    for ours, theirs in zip(_outputs(tiny_ae), _outputs(loaded), strict=True):
        assert torch.equal(ours, theirs)


def test_saved_file_uses_parametrized_names_for_convs_and_legacy_names_for_vq(saved):
    # Given a saved tiny codec
    names = set(load_file(saved / WEIGHTS_FILE))
    # Then convs carry original0/original1, VQ projections weight_g/weight_v, and no masks are written
    assert "encoder.block.0.conv.parametrizations.weight.original0" in names
    assert "decoder.model.1.block.1.conv.parametrizations.weight.original1" in names
    assert "quantizer.quantizer.quantizers.0.in_proj.weight_g" in names
    assert "quantizer.semantic_quantizer.quantizers.0.out_proj.weight_v" in names
    assert not any(name.endswith("causal_mask") for name in names)


def test_both_weight_norm_namings_load_for_every_wn_layer(saved, tiny_ae):
    # Given a checkpoint whose convs use weight_g/weight_v and whose VQ projections use original0/1
    swap = {
        ".parametrizations.weight.original0": ".weight_g",
        ".parametrizations.weight.original1": ".weight_v",
        ".weight_g": ".parametrizations.weight.original0",
        ".weight_v": ".parametrizations.weight.original1",
    }

    def swap_names(state: dict) -> None:
        for name in list(state):
            for old, new in swap.items():
                if name.endswith(old):
                    state[name[: -len(old)] + new] = state.pop(name)
                    break

    _rewrite(saved, swap_names)
    # When it is loaded
    loaded = load_autoencoder(saved)
    # Then the outputs are identical to the original codec's
    for ours, theirs in zip(_outputs(tiny_ae), _outputs(loaded), strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda s: s.pop("decoder.model.6.conv.bias"), "decoder.model.6.conv.bias"),
        (lambda s: s.__setitem__("encoder.block.5.beta", s.pop("encoder.block.5.alpha")), "encoder.block.5.alpha"),
        (lambda s: s.__setitem__("quantizer.downsample.0.1.gamma", torch.ones(3)), "quantizer.downsample.0.1.gamma"),
        (lambda s: s.__setitem__("quantizer.pre_module.causal_mask", torch.ones(3, 3).bool()), "causal_mask"),
        (lambda s: s.__setitem__("quantizer.extra.weight", torch.ones(1)), "quantizer.extra.weight"),
    ],
    ids=["missing", "renamed", "mis-shaped", "mis-shaped-mask", "unexpected"],
)
def test_a_mismatched_checkpoint_fails_naming_the_tensor(saved, edit, named):
    # Given a checkpoint with one tensor missing, renamed, mis-shaped or extra
    _rewrite(saved, edit)
    # When it is loaded, Then CheckpointMismatch names the tensor
    with pytest.raises(CheckpointMismatch, match=named.replace(".", r"\.")):
        load_autoencoder(saved)


def test_published_style_masks_are_accepted_and_absent_rope_tables_recomputed(tmp_path):
    # Given a codec saved with causal masks added and its RoPE tables removed
    torch.manual_seed(1)
    ae = FishS1DAC(SMALL_TABLES).eval()
    directory = save_autoencoder(ae, tmp_path / "published")
    masks = {name: size for name, size in checkpoint_layout(SMALL_TABLES).items() if name.endswith("causal_mask")}

    def publish(state: dict) -> None:
        for name, (shape, _) in masks.items():
            state[name] = torch.ones(shape, dtype=torch.bool).tril()
            state.pop(name.replace("causal_mask", "freqs_cis"))

    _rewrite(directory, publish)
    # When it is loaded
    loaded = load_autoencoder(directory)
    # Then the masks were dropped, the tables equal the stored ones and outputs are identical
    assert not any("causal_mask" in name for name in loaded.state_dict())
    for theirs, ours in zip(loaded.transformers(), ae.transformers(), strict=True):
        assert theirs.freqs_cis.dtype == torch.bfloat16 and torch.equal(theirs.freqs_cis, ours.freqs_cis)
    for a, b in zip(_outputs(ae), _outputs(loaded), strict=True):
        assert torch.equal(a, b)


def test_bfloat16_loading_casts_every_weight_and_still_tracks_float32(saved, tiny_ae):
    # Given a saved tiny codec
    # When it is loaded in the bf16 low-memory setting
    loaded = load_autoencoder(saved, dtype=torch.bfloat16)
    z_q, audio = _outputs(loaded)
    # Then every tensor is bf16, the outputs are bf16, and decoding stays close to float32
    assert {t.dtype for t in loaded.state_dict().values()} == {torch.bfloat16}
    assert z_q.dtype == audio.dtype == torch.bfloat16
    reference = _outputs(tiny_ae)[1]
    cosine = torch.nn.functional.cosine_similarity(audio.float().flatten(), reference.flatten(), dim=0)
    assert cosine > 0.95


def test_a_non_floating_dtype_and_a_missing_directory_raise_named_errors(saved, tmp_path):
    with pytest.raises(InvalidInput, match="floating"):
        load_autoencoder(saved, dtype=torch.int8)
    with pytest.raises(WeightsNotFound):
        load_autoencoder(tmp_path / "nowhere")


def test_without_config_json_the_published_architecture_is_expected(saved):
    # Given a tiny codec saved without its config.json (upstream never reads one)
    (saved / CONFIG_FILE).unlink()
    # When it is loaded / Then the published configuration is assumed: its shapes disagree
    assert autoencoder_weights.PUBLISHED_CONFIG == AutoencoderConfig.from_dict(PUBLISHED_CONFIG)
    published_shape = r"decoder\.model\.0\.conv\.bias \(checkpoint \(16,\), model \(1536,\)\)"
    with pytest.raises(CheckpointMismatch, match=published_shape):
        load_autoencoder(saved)


def test_a_checkpoint_without_config_json_loads_with_the_published_config(saved, tiny_ae, monkeypatch):
    # Given a tiny codec saved without its config.json, and the tiny config standing in as the published one
    (saved / CONFIG_FILE).unlink()
    monkeypatch.setattr(autoencoder_weights, "PUBLISHED_CONFIG", TINY_AUTOENCODER_CONFIG)
    # When it is loaded
    loaded = load_autoencoder(saved)
    # Then it has that config and gives identical outputs
    assert loaded.config == TINY_AUTOENCODER_CONFIG
    for ours, theirs in zip(_outputs(tiny_ae), _outputs(loaded), strict=True):
        assert torch.equal(ours, theirs)


def test_published_config_json_gives_the_full_size_defaults():
    # Given the published config.json fields
    # When parsed, Then they are exactly the defaults (transformer sizes are upstream constants)
    assert set(PUBLISHED_CONFIG) == set(AUTOENCODER_PUBLISHED_FIELDS)
    config = AutoencoderConfig.from_dict(PUBLISHED_CONFIG)
    assert config == AutoencoderConfig() and config.frame_length == 2048 and config.hop_length == 512


def test_config_round_trips_and_rejects_unknown_keys_and_non_causal_codecs():
    assert AutoencoderConfig.from_dict(TINY_AUTOENCODER_CONFIG.to_dict()) == TINY_AUTOENCODER_CONFIG
    with pytest.raises(WeightsError, match="quantizer_dropout"):
        AutoencoderConfig.from_dict({**PUBLISHED_CONFIG, "quantizer_dropout": 0.5})
    with pytest.raises(WeightsError, match="causal"):
        AutoencoderConfig.from_dict({**PUBLISHED_CONFIG, "causal": False})
    with pytest.raises(WeightsError, match="2048"):
        AutoencoderConfig.from_dict({**PUBLISHED_CONFIG, "encoder_rates": [2, 4, 8, 4]})
