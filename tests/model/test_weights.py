"""Loading and saving EchoDiT checkpoints: plain directories, the HF cache layout, strict mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from echo_tts.errors import CheckpointMismatch, WeightsError, WeightsNotFound
from echo_tts.model import EchoDiT
from echo_tts.weights import WEIGHTS_FILE, is_blockwise_tensor, load_echo_dit, save_echo_dit


def _velocity(model: EchoDiT) -> torch.Tensor:
    """A deterministic forward pass used to compare two models."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 256, (1, 6), generator=g)
    mask = torch.ones(1, 6, dtype=torch.bool)
    speaker = torch.randn(1, 8, 80, generator=g)
    x = torch.randn(1, 5, 80, generator=g)
    return model(
        x,
        torch.tensor([0.6]),
        text_kv=model.get_kv_cache_text(ids, mask),
        text_mask=mask,
        speaker_kv=model.get_kv_cache_speaker(speaker),
        speaker_mask=torch.ones(1, 8, dtype=torch.bool),
    )


def _assert_same_network(loaded: EchoDiT, saved: EchoDiT) -> None:
    """Equal tensors and the same velocity (memory-mapped tensors may take other SIMD paths: 1 ulp)."""
    saved_state = saved.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, saved_state[name]), name
    torch.testing.assert_close(_velocity(loaded), _velocity(saved), rtol=1e-5, atol=1e-6)


def _rewrite(directory: Path, edit) -> None:
    """Apply ``edit`` to the state dict stored in ``directory``."""
    state = load_file(str(directory / WEIGHTS_FILE))
    edit(state)
    save_file(state, str(directory / WEIGHTS_FILE))


def test_a_saved_tiny_model_loads_from_a_directory_and_computes_the_same(tiny_dit, tiny_checkpoint_dir):
    # Given a tiny checkpoint written by save_echo_dit
    assert json.loads((tiny_checkpoint_dir / "config.json").read_text())["model_size"] == 64
    # When it is loaded in float32
    loaded = load_echo_dit(tiny_checkpoint_dir, dtype=torch.float32)
    # Then it is the same network, in eval mode, without gradients
    assert loaded.config == tiny_dit.config and loaded.blockwise
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    _assert_same_network(loaded, tiny_dit)


def test_the_default_bf16_load_casts_every_tensor(tiny_checkpoint_dir):
    # When the tiny checkpoint loads with the default dtype
    model = load_echo_dit(tiny_checkpoint_dir)
    # Then every tensor is bf16 on the CPU and the output is still float32
    assert {t.dtype for t in model.state_dict().values()} == {torch.bfloat16}
    assert model.dtype == torch.bfloat16 and model.device == torch.device("cpu")
    assert _velocity(model).dtype == torch.float32


def test_a_repo_id_resolves_through_the_offline_hub_cache(tiny_dit, tiny_checkpoint_dir, offline_hub):
    # Given the tiny checkpoint in the HF cache layout of a repo id
    offline_hub("acme/echo-tiny", tiny_checkpoint_dir)
    # When it is loaded by repo id
    loaded = load_echo_dit("acme/echo-tiny", dtype=torch.float32)
    # Then it is the saved network
    _assert_same_network(loaded, tiny_dit)


def test_an_unknown_repo_fails_naming_the_repo_and_the_file(offline_hub):
    # When a repo that is not cached is requested offline
    with pytest.raises(WeightsNotFound) as error:
        load_echo_dit("acme/not-there")
    # Then the error names both
    assert "acme/not-there" in str(error.value) and WEIGHTS_FILE in str(error.value)


def test_a_missing_directory_or_file_is_weights_not_found(tmp_path):
    with pytest.raises(WeightsNotFound, match="does not exist"):
        load_echo_dit(tmp_path / "nowhere")
    with pytest.raises(WeightsNotFound, match=WEIGHTS_FILE):
        load_echo_dit(tmp_path)


def test_a_renamed_tensor_is_reported_as_missing_and_unexpected(tiny_checkpoint_dir):
    # Given a checkpoint where one tensor has another name
    _rewrite(tiny_checkpoint_dir, lambda s: s.__setitem__("out_norm.scale", s.pop("out_norm.weight")))
    # When it is loaded / Then both names appear in the error
    with pytest.raises(CheckpointMismatch) as error:
        load_echo_dit(tiny_checkpoint_dir)
    assert "1 missing: out_norm.weight" in str(error.value)
    assert "1 unexpected: out_norm.scale" in str(error.value)


def test_a_missing_tensor_is_named(tiny_checkpoint_dir):
    _rewrite(tiny_checkpoint_dir, lambda s: s.pop("blocks.1.attention.wk_text.weight"))
    with pytest.raises(CheckpointMismatch, match=r"missing: blocks\.1\.attention\.wk_text\.weight"):
        load_echo_dit(tiny_checkpoint_dir)


def test_a_mis_shaped_tensor_is_named_with_both_shapes(tiny_checkpoint_dir):
    _rewrite(tiny_checkpoint_dir, lambda s: s.__setitem__("in_proj.bias", torch.zeros(65)))
    with pytest.raises(CheckpointMismatch, match=r"in_proj\.bias \(checkpoint \(65,\), model \(64,\)\)"):
        load_echo_dit(tiny_checkpoint_dir)


def test_blockwise_tensors_are_dropped_on_request_and_required_otherwise(tiny_dit, tiny_checkpoint_dir):
    # Given the full checkpoint, dropping blockwise weights gives the standard model
    standard = load_echo_dit(tiny_checkpoint_dir, dtype=torch.float32, drop_blockwise=True)
    assert not standard.blockwise
    assert not any(is_blockwise_tensor(name) for name in standard.state_dict())
    _assert_same_network(standard, tiny_dit)
    # Given a checkpoint without them
    _rewrite(tiny_checkpoint_dir, lambda s: [s.pop(k) for k in list(s) if is_blockwise_tensor(k)])
    # Then it loads only when they are dropped
    assert not load_echo_dit(tiny_checkpoint_dir, drop_blockwise=True).blockwise
    with pytest.raises(CheckpointMismatch, match=r"missing: .*latent_encoder\."):
        load_echo_dit(tiny_checkpoint_dir)


def test_many_mismatches_are_listed_ten_at_a_time_with_counts(tiny_checkpoint_dir):
    _rewrite(tiny_checkpoint_dir, lambda s: [s.pop(k) for k in list(s) if k.startswith("blocks.")])
    with pytest.raises(CheckpointMismatch) as error:
        load_echo_dit(tiny_checkpoint_dir)
    message = str(error.value)
    assert "missing: blocks." in message and "more)" in message
    assert message.count(", blocks.") <= 9


def test_without_config_json_the_full_size_architecture_is_expected(tiny_checkpoint_dir):
    # Given a tiny checkpoint without its config.json
    (tiny_checkpoint_dir / "config.json").unlink()
    # When it is loaded / Then the published sizes are assumed and the shapes disagree
    with pytest.raises(CheckpointMismatch, match=r"gate\.weight \(checkpoint \(64, 64\), model \(2048, 2048\)\)"):
        load_echo_dit(tiny_checkpoint_dir)


def test_an_invalid_config_json_is_a_weights_error(tiny_checkpoint_dir):
    (tiny_checkpoint_dir / "config.json").write_text(json.dumps({"model_sise": 64}))
    with pytest.raises(WeightsError, match="model_sise"):
        load_echo_dit(tiny_checkpoint_dir)


def test_save_echo_dit_round_trips_a_bf16_model_without_blockwise_weights(tiny_dit_config, tmp_path):
    # Given a bf16 standard model
    model = EchoDiT(tiny_dit_config, blockwise=False).to(torch.bfloat16)
    # When saved and reloaded keeping the stored dtype
    save_echo_dit(model, tmp_path / "ckpt")
    loaded = load_echo_dit(tmp_path / "ckpt", dtype=None, drop_blockwise=True)
    # Then every tensor is identical
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
