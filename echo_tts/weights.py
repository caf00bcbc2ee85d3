"""Load and save EchoDiT and PCA weights (spec §1.4, §3.11) from a local directory or the HF hub.

The gpt-fast way: build on the ``meta`` device, read safetensors, cast to the requested dtype
once, ``load_state_dict(assign=True)`` with a strict name/shape check, then ``eval()`` without
gradients. A ``config.json`` beside the weights (written by :func:`save_echo_dit`, used for tiny
test checkpoints) sets the architecture; without one the published full-size config is used.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoint import load_state_strict, read_safetensors
from .config import CONFIG_FILE, DEFAULT_MODEL_REPO, PCA_FILE, WEIGHTS_FILE, EchoDiTConfig
from .errors import CheckpointMismatch, WeightsError, WeightsNotFound
from .hub import resolve_file
from .model import EchoDiT
from .pca import PCAState

PCA_KEYS = ("pca_components", "pca_mean", "latent_scale")
# Tensors used only by blockwise/continuation generation (spec §3.11): 219 of the 1336.
BLOCKWISE_PREFIXES = ("latent_encoder.", "latent_norm")
BLOCKWISE_SUBSTRINGS = (".wk_latent", ".wv_latent")

PathLike = str | os.PathLike[str]


def is_blockwise_tensor(name: str) -> bool:
    """True for the checkpoint tensors that only blockwise generation needs."""
    return name.startswith(BLOCKWISE_PREFIXES) or any(part in name for part in BLOCKWISE_SUBSTRINGS)


def _read_dit_config(repo_or_dir: PathLike, token: str | None, revision: str | None) -> EchoDiTConfig:
    try:
        path = resolve_file(repo_or_dir, CONFIG_FILE, token=token, revision=revision)
    except WeightsNotFound:
        return EchoDiTConfig()  # the published repo has no config.json: full-size defaults
    try:
        return EchoDiTConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"invalid EchoDiT config {str(path)!r}: {exc}") from exc


def load_echo_dit(
    repo_or_dir: PathLike = DEFAULT_MODEL_REPO,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.bfloat16,
    token: str | None = None,
    drop_blockwise: bool = False,
    revision: str | None = None,
) -> EchoDiT:
    """EchoDiT with every tensor cast to ``dtype`` (None keeps the stored dtype), in eval mode, no grad.

    ``drop_blockwise=True`` builds the model without the latent-prefix weights and ignores them in
    the checkpoint (which may also lack them); otherwise they are required.
    """
    weights_path = resolve_file(repo_or_dir, WEIGHTS_FILE, token=token, revision=revision)
    config = _read_dit_config(repo_or_dir, token, revision)
    state = read_safetensors(weights_path, device=device)
    if drop_blockwise:
        state = {name: tensor for name, tensor in state.items() if not is_blockwise_tensor(name)}
    if dtype is not None:
        state = {name: tensor.to(dtype) for name, tensor in state.items()}
    with torch.device("meta"):
        model = EchoDiT(config, blockwise=not drop_blockwise)
    load_state_strict(model, state, what=f"EchoDiT ({weights_path})")
    return model.eval().requires_grad_(False)


def save_echo_dit(model: EchoDiT, directory: PathLike) -> Path:
    """Write ``pytorch_model.safetensors`` and ``config.json`` into ``directory``; returns the weights path."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(target / WEIGHTS_FILE))
    (target / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(model.config), indent=2) + "\n")
    return target / WEIGHTS_FILE


def _check_pca_state(state: dict[str, torch.Tensor], where: str) -> None:
    missing = [key for key in PCA_KEYS if key not in state]
    unexpected = sorted(set(state) - set(PCA_KEYS))
    if missing or unexpected:
        raise CheckpointMismatch(f"PCA file {where}: missing {missing}, unexpected {unexpected}")
    components, mean, scale = (state[key] for key in PCA_KEYS)
    if components.ndim != 2 or tuple(mean.shape) != (components.shape[1],) or scale.numel() != 1:
        raise CheckpointMismatch(
            f"PCA file {where}: mis-shaped pca_components {tuple(components.shape)}, "
            f"pca_mean {tuple(mean.shape)}, latent_scale {tuple(scale.shape)}"
        )


def load_pca(
    repo_or_dir: PathLike = DEFAULT_MODEL_REPO,
    *,
    device: str | torch.device = "cpu",
    token: str | None = None,
    filename: str = PCA_FILE,
    revision: str | None = None,
) -> PCAState:
    """The PCA basis as float32 tensors on ``device`` and ``latent_scale`` as a Python float."""
    path = resolve_file(repo_or_dir, filename, token=token, revision=revision)
    state = read_safetensors(path, device=device)
    _check_pca_state(state, str(path))
    return PCAState(
        pca_components=state["pca_components"].float(),
        pca_mean=state["pca_mean"].float(),
        latent_scale=float(state["latent_scale"].item()),
    )


def save_pca(pca: PCAState, directory: PathLike, *, filename: str = PCA_FILE) -> Path:
    """Write the PCA file (``latent_scale`` as a one-element float32 tensor); returns its path."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    state = {
        "pca_components": pca.pca_components.detach().float().cpu().contiguous(),
        "pca_mean": pca.pca_mean.detach().float().cpu().contiguous(),
        "latent_scale": torch.tensor([pca.latent_scale], dtype=torch.float32),
    }
    save_file(state, str(target / filename))
    return target / filename
