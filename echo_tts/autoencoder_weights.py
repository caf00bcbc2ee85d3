"""Load and save the Fish S1-DAC autoencoder in the published ``jordand/fish-s1-dac-min`` layout.

The layout: ``pytorch_model.safetensors`` (conv weight-norm pairs as
``parametrizations.weight.original0/1``, VQ projections as ``weight_g/weight_v``, bf16 RoPE
tables ``freqs_cis``, and in the published file also bool ``causal_mask`` buffers) and
``config.json`` with the published fields (ours adds the transformer sizes). Upstream never
reads ``config.json`` (it hard-codes the published values), so a checkpoint without one loads
with the published configuration.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from .autoencoder import FishS1DAC
from .checkpoint import load_state_strict, read_safetensors
from .config import CONFIG_FILE, DEFAULT_AE_REPO, WEIGHTS_FILE, AutoencoderConfig
from .errors import InvalidInput, WeightsError, WeightsNotFound
from .hub import resolve_file

PUBLISHED_CONFIG = AutoencoderConfig()  # fish-s1-dac-min, as upstream hard-codes it (spec §1.4)
ROPE_TABLE = "freqs_cis"  # may be absent from a checkpoint: recomputed exactly (spec §5.2)
CAUSAL_MASK = "causal_mask"  # published but unused: accepted and dropped on load, never written


def read_autoencoder_config(
    repo_or_dir: str | os.PathLike[str] = DEFAULT_AE_REPO, *, token: str | None = None, revision: str | None = None
) -> AutoencoderConfig:
    """The ``config.json`` of a repo or directory as an :class:`AutoencoderConfig`."""
    path = resolve_file(repo_or_dir, CONFIG_FILE, token=token, revision=revision)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read autoencoder config {str(path)!r}: {exc}") from exc
    if not isinstance(values, dict):
        raise WeightsError(f"autoencoder config {str(path)!r} is not a JSON object")
    return AutoencoderConfig.from_dict(values)


def checkpoint_layout(config: AutoencoderConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor in a published-style checkpoint, masks included."""
    with torch.device("meta"):
        ae = FishS1DAC(config)
    layout = {name: (tuple(t.shape), t.dtype) for name, t in ae.state_dict().items()}
    for name, module in ae.named_modules():
        if hasattr(module, ROPE_TABLE):
            layout[f"{name}.{CAUSAL_MASK}"] = ((module.block_size, module.block_size), torch.bool)
    return layout


def _is_rope_table(name: str) -> bool:
    return name.endswith("." + ROPE_TABLE)


def load_autoencoder(
    repo_or_dir: str | os.PathLike[str] = DEFAULT_AE_REPO,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    token: str | None = None,
    revision: str | None = None,
) -> FishS1DAC:
    """Build the codec on ``meta`` and load it strictly (eval mode, no grad).

    The architecture comes from ``config.json`` beside the weights, or is the published one
    (:data:`PUBLISHED_CONFIG`) when there is none.

    ``dtype=float32`` (default) keeps the stored dtypes, i.e. float32 weights and bf16 RoPE
    tables as upstream; any other floating dtype (``bfloat16``: the low-memory setting) casts
    every floating tensor. Mismatched checkpoints raise ``CheckpointMismatch`` naming tensors.
    """
    if not dtype.is_floating_point:
        raise InvalidInput(f"autoencoder dtype must be a floating dtype, got {dtype}")
    weights_path = resolve_file(repo_or_dir, WEIGHTS_FILE, token=token, revision=revision)
    try:
        config = read_autoencoder_config(repo_or_dir, token=token, revision=revision)
    except WeightsNotFound:
        config = PUBLISHED_CONFIG  # no config.json: upstream's hard-coded configuration
    state = read_safetensors(weights_path, device=device)
    if dtype != torch.float32:
        for name, tensor in state.items():  # one tensor at a time: peak = file + one cast copy
            if tensor.is_floating_point():
                state[name] = tensor.to(dtype)
    with torch.device("meta"):
        ae = FishS1DAC(config)
    load_state_strict(ae, state, what="Fish S1-DAC autoencoder", optional=_is_rope_table)
    for transformer in ae.transformers():
        if transformer.freqs_cis.is_meta:
            transformer.reset_rope_table(device)
            if dtype != torch.float32:
                transformer.freqs_cis = transformer.freqs_cis.to(dtype)
    return ae.eval().requires_grad_(False)


def save_autoencoder(ae: FishS1DAC, directory: str | os.PathLike[str]) -> Path:
    """Write ``pytorch_model.safetensors`` and ``config.json`` in the published layout; returns the directory."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().to("cpu").contiguous() for name, t in ae.state_dict().items()}
    save_file(state, os.fspath(target / WEIGHTS_FILE))
    (target / CONFIG_FILE).write_text(json.dumps(ae.config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return target
