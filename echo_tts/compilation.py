"""``torch.compile`` applied to the loaded models: their methods are replaced by compiled ones."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .autoencoder import FishS1DAC
from .model import EchoDiT

__all__ = ["compile_autoencoder", "compile_echo_dit", "compile_methods"]

KV_CACHE_BUILDERS = ("get_kv_cache_text", "get_kv_cache_speaker")


def compile_methods(module: nn.Module, names: Iterable[str]) -> None:
    """Replace each named method of ``module`` (on the instance) by its ``torch.compile`` version."""
    for name in names:
        setattr(module, name, torch.compile(getattr(module, name)))


def compile_echo_dit(model: EchoDiT, *, kv_caches: bool = False) -> EchoDiT:
    """Compile the DiT ``forward`` (what every sampler step runs); ``kv_caches=True`` also compiles
    the K/V-cache builders (text, speaker, and latent when the model is blockwise), as upstream's
    ``load_model_from_hf(compile=True)``. Returns ``model``, changed in place."""
    names = ["forward"]
    if kv_caches:
        names += [*KV_CACHE_BUILDERS, *(["get_kv_cache_latent"] if model.blockwise else [])]
    compile_methods(model, names)
    return model


def compile_autoencoder(ae: FishS1DAC) -> FishS1DAC:
    """Compile the quantizer's resamplers and transformers only, as upstream does. Returns ``ae``."""
    quantizer = ae.quantizer
    for module in (*quantizer.downsample, *quantizer.upsample, quantizer.pre_module, quantizer.post_module):
        compile_methods(module, ["forward"])
    return ae
