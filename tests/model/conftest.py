"""Tiny EchoDiT fixtures shared by the model, weights, sampler and pipeline tests, and the tiny
speech-like checkpoint (``echo_tts.testing.make_checkpoint``) with a float32 Pipeline on it."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from echo_tts.config import AE_LATENT_DIM, LATENT_DIM, EchoDiTConfig
from echo_tts.model import EchoDiT
from echo_tts.pca import PCAState
from echo_tts.pipeline import Pipeline
from echo_tts.testing import make_checkpoint
from echo_tts.weights import save_echo_dit, save_pca

RANDOM_DIT_SEED = 1234
HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"  # the commit id the offline hub cache files repos under
RANDOM_DIT_CONFIG = EchoDiTConfig(
    model_size=64,
    num_layers=2,
    num_heads=4,
    intermediate_size=96,
    text_model_size=48,
    text_num_layers=2,
    text_num_heads=2,
    text_intermediate_size=80,
    speaker_model_size=48,
    speaker_num_layers=2,
    speaker_num_heads=2,
    speaker_intermediate_size=80,
    timestep_embed_size=32,
    adaln_rank=8,
)


def make_random_dit(config: EchoDiTConfig = RANDOM_DIT_CONFIG, *, seed: int = RANDOM_DIT_SEED, blockwise: bool = True):
    """Random-init float32 EchoDiT on the CPU in eval mode; norm weights are perturbed away from 1."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # leave the global RNG as it was
        torch.manual_seed(seed)
        model = EchoDiT(config, blockwise=blockwise)
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
    return model.eval().requires_grad_(False)


def make_random_pca(*, seed: int = RANDOM_DIT_SEED, ae_dim: int = AE_LATENT_DIM) -> PCAState:
    """Orthonormal random components (80, ae_dim), a random mean and the published scale float32(1/18)."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(ae_dim, LATENT_DIM, generator=generator))  # (ae_dim, 80)
    mean = 0.1 * torch.randn(ae_dim, generator=generator)
    scale = torch.tensor(1.0 / 18.0, dtype=torch.float32).item()
    assert math.isclose(scale, 1 / 18, rel_tol=1e-6)
    return PCAState(pca_components=basis.T.contiguous(), pca_mean=mean, latent_scale=scale)


@pytest.fixture
def tiny_dit_config() -> EchoDiTConfig:
    return RANDOM_DIT_CONFIG


@pytest.fixture
def tiny_dit(tiny_dit_config: EchoDiTConfig) -> EchoDiT:
    return make_random_dit(tiny_dit_config)


@pytest.fixture
def tiny_pca() -> PCAState:
    return make_random_pca()


@pytest.fixture
def tiny_checkpoint_dir(tmp_path: Path, tiny_dit: EchoDiT, tiny_pca: PCAState) -> Path:
    """A directory laid out like ``jordand/echo-tts-base``: weights, PCA file and a tiny config.json."""
    directory = tmp_path / "echo-tts-base"
    save_echo_dit(tiny_dit, directory)
    save_pca(tiny_pca, directory)
    return directory


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on a small shared CPU, OpenMP threads of several processes fight (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint of seed 0 (``echo-tts-base/`` and ``fish-s1-dac-min/``); tests only read it."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny"), size="tiny", seed=0)


@pytest.fixture(scope="session")
def pipe(checkpoint: Path) -> Pipeline:
    """A float32 Pipeline on :func:`checkpoint`; it holds no state between calls, so one serves all tests."""
    return Pipeline.from_pretrained(checkpoint / "echo-tts-base", checkpoint / "fish-s1-dac-min", dtype="float32")


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Path], None]:
    """An offline hub whose cache lives in tmp_path (constants are read by huggingface_hub at import).

    Call it with ``(repo_id, directory)`` to lay the directory's files out in the cache as that repo
    at revision main."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def add_repo(repo_id: str, source: Path) -> None:
        entry = cache / ("models--" + repo_id.replace("/", "--"))
        shutil.copytree(source, entry / "snapshots" / HUB_REVISION)
        (entry / "refs").mkdir(parents=True)
        (entry / "refs" / "main").write_text(HUB_REVISION)

    return add_repo
