"""resolve_file and load_state_strict on their own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from echo_tts.checkpoint import load_state_strict, read_safetensors
from echo_tts.errors import CheckpointMismatch, WeightsError, WeightsNotFound
from echo_tts.hub import resolve_file


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.register_buffer("table", torch.arange(4.0))


def test_a_local_directory_wins_and_a_missing_file_is_named(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")
    assert resolve_file(tmp_path, "w.safetensors") == tmp_path / "w.safetensors"
    with pytest.raises(WeightsNotFound, match="'x.safetensors'"):
        resolve_file(str(tmp_path), "x.safetensors")


def test_a_path_that_does_not_exist_is_not_sent_to_the_hub(tmp_path):
    for missing in (tmp_path / "a" / "b", Path("relative/dir"), str(tmp_path / "c"), "./x/y"):
        with pytest.raises(WeightsNotFound, match="does not exist"):
            resolve_file(missing, "w.safetensors")


def test_an_unreadable_safetensors_file_is_a_weights_error(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="bad.safetensors"):
        read_safetensors(tmp_path / "bad.safetensors")
    with pytest.raises(WeightsNotFound):
        read_safetensors(tmp_path / "none.safetensors")


def test_strict_load_assigns_checkpoint_tensors_into_a_meta_module():
    # Given a module built on meta
    with torch.device("meta"):
        module = _Pair()
    state = {"a.weight": torch.ones(4, 3), "a.bias": torch.zeros(4), "table": torch.ones(4)}
    # When loaded / Then its tensors are the checkpoint's
    load_state_strict(module, state, what="pair")
    assert module.a.weight.device.type == "cpu" and torch.equal(module.table, torch.ones(4))


def test_optional_tensors_may_be_absent_but_others_may_not():
    with torch.device("meta"):
        module = _Pair()
    state = {"a.weight": torch.ones(4, 3), "a.bias": torch.zeros(4)}
    load_state_strict(module, state, what="pair", optional=lambda name: name == "table")
    with torch.device("meta"):
        module = _Pair()
    with pytest.raises(CheckpointMismatch, match="pair checkpoint .* 1 missing: table"):
        load_state_strict(module, state, what="pair")


def test_renames_in_a_pre_hook_are_honoured():
    # Given a module that maps a legacy name in a load_state_dict pre-hook
    module = _Pair()

    def rename(state, prefix, *args):
        if prefix + "old_table" in state:
            state[prefix + "table"] = state.pop(prefix + "old_table")

    module._register_load_state_dict_pre_hook(rename)
    state = {"a.weight": torch.ones(4, 3), "a.bias": torch.zeros(4), "old_table": torch.full((4,), 2.0)}
    # When loaded / Then the renamed tensor lands and nothing is reported unexpected
    load_state_strict(module, state, what="pair")
    assert torch.equal(module.table, torch.full((4,), 2.0))
