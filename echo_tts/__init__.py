"""Echo-TTS inference library: EchoDiT, the S1-DAC autoencoder, sampling, text and audio."""

from .config import (
    DEFAULT_PRESET,
    SAMPLER_PRESETS,
    EchoDiTConfig,
    SamplerConfig,
    sampler_preset,
)

__all__ = [
    "DEFAULT_PRESET",
    "SAMPLER_PRESETS",
    "EchoDiTConfig",
    "SamplerConfig",
    "sampler_preset",
]
