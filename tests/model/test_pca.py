"""PCA projection between z_q and the DiT latents (spec §4.3), and its file format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from echo_tts.errors import CheckpointMismatch
from echo_tts.pca import PCAState
from echo_tts.weights import PCA_FILE, load_pca, save_pca

KEYS_JSON = Path(__file__).parent / "data" / "echo_dit_state_dict_keys.json"


def test_the_published_pca_file_layout_round_trips(tiny_pca, tmp_path):
    # Given the published layout: components (80, 1024), mean (1024,), a one-element scale
    published = json.loads(KEYS_JSON.read_text())["pca_state_safetensors"]["tensors"]
    # When a PCA state is saved
    path = save_pca(tiny_pca, tmp_path)
    stored = load_file(str(path))
    # Then the file has exactly those tensors, float32
    assert path.name == PCA_FILE
    assert set(stored) == set(published)
    assert list(stored["pca_components"].shape) == published["pca_components"] == [80, 1024]
    assert list(stored["pca_mean"].shape) == published["pca_mean"] == [1024]
    assert stored["latent_scale"].numel() == 1
    assert {t.dtype for t in stored.values()} == {torch.float32}
    # And loading gives the same tensors and the float32(1/18) scale as a Python float
    loaded = load_pca(tmp_path)
    assert torch.equal(loaded.pca_components, tiny_pca.pca_components)
    assert torch.equal(loaded.pca_mean, tiny_pca.pca_mean)
    assert isinstance(loaded.latent_scale, float)
    assert loaded.latent_scale == torch.tensor(1 / 18, dtype=torch.float32).item()


def test_encode_subtracts_the_mean_projects_and_scales(tiny_pca):
    # Given z_q (B, 1024, T) in bf16
    z_q = torch.randn(2, 1024, 5).to(torch.bfloat16)
    # When it is encoded
    latents = tiny_pca.encode(z_q)
    # Then latents = (z - mean) @ components^T * scale, (B, T, 80) float32
    z = z_q.float().transpose(1, 2)
    expected = (z - tiny_pca.pca_mean) @ tiny_pca.pca_components.T * tiny_pca.latent_scale
    assert latents.shape == (2, 5, 80) and latents.dtype == torch.float32
    torch.testing.assert_close(latents, expected)


def test_decode_divides_by_the_scale_then_maps_back(tiny_pca):
    # Given latents (B, T, 80)
    latents = torch.randn(2, 5, 80)
    # When decoded
    z = tiny_pca.decode(latents)
    # Then z = (y / scale) @ components + mean, laid out (B, 1024, T) float32
    expected = (latents / tiny_pca.latent_scale) @ tiny_pca.pca_components + tiny_pca.pca_mean
    assert z.shape == (2, 1024, 5) and z.dtype == torch.float32
    torch.testing.assert_close(z, expected.transpose(1, 2))


def test_decode_then_encode_returns_the_latents_for_an_orthonormal_basis(tiny_pca):
    # Given orthonormal components
    latents = torch.randn(1, 7, 80)
    # When latents go to z_q and back / Then they are unchanged
    torch.testing.assert_close(tiny_pca.encode(tiny_pca.decode(latents)), latents, rtol=1e-4, atol=1e-4)


def test_to_moves_both_tensors_and_keeps_the_scale(tiny_pca):
    moved = tiny_pca.to("meta")
    assert moved.pca_components.device.type == "meta" and moved.pca_mean.device.type == "meta"
    assert moved.latent_scale == tiny_pca.latent_scale and tiny_pca.pca_mean.device.type == "cpu"


@pytest.mark.parametrize(
    ("state", "named"),
    [
        ({"pca_components": torch.zeros(80, 8), "pca_mean": torch.zeros(8)}, "latent_scale"),
        ({"pca_components": torch.zeros(80, 8), "pca_mean": torch.zeros(9), "latent_scale": torch.ones(1)}, "pca_mean"),
        (
            {
                "pca_components": torch.zeros(80, 8),
                "pca_mean": torch.zeros(8),
                "latent_scale": torch.ones(1),
                "x": torch.ones(1),
            },
            "'x'",
        ),
    ],
)
def test_a_wrong_pca_file_is_a_checkpoint_mismatch_naming_the_tensor(tmp_path, state, named):
    # Given a PCA file with a missing, mis-shaped or extra tensor
    save_file(state, str(tmp_path / PCA_FILE))
    # When it is loaded / Then the error names it
    with pytest.raises(CheckpointMismatch, match=named):
        load_pca(tmp_path)


def test_a_scalar_latent_scale_is_accepted(tmp_path):
    # Given a file storing latent_scale as a 0-d tensor (the upstream shape is not verified)
    state = {"pca_components": torch.eye(80, 8), "pca_mean": torch.zeros(8), "latent_scale": torch.tensor(0.5)}
    save_file(state, str(tmp_path / PCA_FILE))
    # Then it reads as a float
    assert load_pca(tmp_path).latent_scale == 0.5
    assert isinstance(PCAState(torch.eye(80, 8), torch.zeros(8), 0.5).encode(torch.zeros(1, 8, 2)), torch.Tensor)
