"""Frozen configuration dataclasses, named presets and the model's fixed constants.

Every number here comes from the upstream Echo-TTS release (see
``shared/reference/echo_tts_spec.md``); the section of the spec is named beside each.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import InvalidSamplerConfig

# --- audio and length constants (spec §2) -------------------------------------------------
SAMPLE_RATE = 44_100  # S1-DAC works at 44.1 kHz mono
AE_DOWNSAMPLE_FACTOR = 2048  # samples per latent frame: 512 encoder hop x 4 quantizer downsample
LATENT_DIM = 80  # PCA latent width fed to the DiT
AE_LATENT_DIM = 1024  # S1-DAC z_q width
MAX_SEQUENCE_LENGTH = 640  # latents generated in one call, the training maximum (29.72 s)
MAX_TEXT_LENGTH = 768  # byte tokens per generation, BOS included
MAX_SPEAKER_LATENT_LENGTH = 6400  # reference latents, the training maximum (297.2 s)
SPEAKER_CHUNK_LATENTS = 640  # references are encoded in independent chunks of this many latents
MAX_REFERENCE_SECONDS = 300.0  # load_audio reads at most this much of a reference file
SPEAKER_PATCH_SIZE = 4  # latent frames per speaker token


@dataclass(frozen=True)
class EchoDiTConfig:
    """Hyper-parameters of EchoDiT, named as the upstream constructor arguments (spec §3.1)."""

    latent_size: int = 80
    model_size: int = 2048
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 5888
    norm_eps: float = 1e-5
    text_vocab_size: int = 256
    text_model_size: int = 1280
    text_num_layers: int = 14
    text_num_heads: int = 10
    text_intermediate_size: int = 3328
    speaker_patch_size: int = 4
    speaker_model_size: int = 1280
    speaker_num_layers: int = 14
    speaker_num_heads: int = 10
    speaker_intermediate_size: int = 3328
    timestep_embed_size: int = 512
    adaln_rank: int = 256

    def __post_init__(self) -> None:
        for width, heads, name in (
            (self.model_size, self.num_heads, "model_size"),
            (self.text_model_size, self.text_num_heads, "text_model_size"),
            (self.speaker_model_size, self.speaker_num_heads, "speaker_model_size"),
        ):
            if width % heads:
                raise ValueError(f"{name}={width} is not divisible by its number of heads {heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.num_heads % 2:
            raise ValueError("num_heads must be even: RoPE is applied to the first half of the heads")

    @property
    def head_dim(self) -> int:
        return self.model_size // self.num_heads

    @property
    def text_head_dim(self) -> int:
        return self.text_model_size // self.text_num_heads

    @property
    def speaker_head_dim(self) -> int:
        return self.speaker_model_size // self.speaker_num_heads

    @classmethod
    def from_dict(cls, values: dict) -> EchoDiTConfig:
        """Build from a ``config.json`` mapping; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown EchoDiT config keys: {', '.join(unknown)}")
        return cls(**values)


@dataclass(frozen=True)
class SamplerConfig:
    """Knobs of the Euler CFG sampler (spec §6). ``None`` switches an option off.

    ``rescale_k``/``rescale_sigma`` enable temporal score rescaling only when both are set;
    ``speaker_kv_scale`` enables "force speaker" and then needs ``speaker_kv_min_t``.
    """

    num_steps: int = 40
    cfg_scale_text: float = 3.0
    cfg_scale_speaker: float = 8.0
    cfg_min_t: float = 0.5
    cfg_max_t: float = 1.0
    truncation_factor: float | None = None
    rescale_k: float | None = None
    rescale_sigma: float | None = None
    speaker_kv_scale: float | None = None
    speaker_kv_max_layers: int | None = None
    speaker_kv_min_t: float | None = None
    sequence_length: int = MAX_SEQUENCE_LENGTH

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise InvalidSamplerConfig(f"num_steps must be >= 1, got {self.num_steps}")
        if self.sequence_length < 1:
            raise InvalidSamplerConfig(f"sequence_length must be >= 1, got {self.sequence_length}")
        if self.speaker_kv_scale is not None and self.speaker_kv_min_t is None:
            raise InvalidSamplerConfig("speaker_kv_scale needs speaker_kv_min_t (force-speaker undo point)")
        if self.speaker_kv_scale is not None and self.speaker_kv_scale <= 0:
            raise InvalidSamplerConfig(f"speaker_kv_scale must be > 0, got {self.speaker_kv_scale}")

    @property
    def rescale_enabled(self) -> bool:
        return self.rescale_k is not None and self.rescale_sigma is not None

    def replace(self, **overrides: object) -> SamplerConfig:
        """A copy with some fields changed (``dataclasses.replace``); unknown names are an error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InvalidSamplerConfig(f"unknown sampler settings: {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]


# The six presets of upstream ``sampler_presets.json`` (spec §6.8), in file order. The file
# stores rescale_k = 1.0 for "off"; the upstream UI turns 1.0 into None before sampling,
# and so do we here, so a preset samples exactly as it does in the upstream UI.
_FLAT = {"truncation_factor": 0.8, "rescale_k": 1.2, "rescale_sigma": 3.0}
_SHARP_OFF = {"truncation_factor": 1.0, "rescale_k": None, "rescale_sigma": 3.0}
SAMPLER_PRESETS: dict[str, SamplerConfig] = {
    "Independent-High-Speaker-CFG": SamplerConfig(cfg_scale_text=3.0, cfg_scale_speaker=8.0, **_SHARP_OFF),
    "Independent-High-Speaker-CFG-Flat": SamplerConfig(cfg_scale_text=3.0, cfg_scale_speaker=8.0, **_FLAT),
    "Independent-High-CFG": SamplerConfig(cfg_scale_text=8.0, cfg_scale_speaker=8.0, **_SHARP_OFF),
    "Independent-High-CFG-Flat": SamplerConfig(cfg_scale_text=8.0, cfg_scale_speaker=8.0, **_FLAT),
    "Independent-Low-CFG": SamplerConfig(cfg_scale_text=3.0, cfg_scale_speaker=3.0, **_SHARP_OFF),
    "Independent-Low-CFG-Flat": SamplerConfig(cfg_scale_text=3.0, cfg_scale_speaker=3.0, **_FLAT),
}
DEFAULT_PRESET = "Independent-High-Speaker-CFG"  # the one the upstream UI loads at start


def sampler_preset(name: str) -> SamplerConfig:
    """The named preset, or an error listing the valid names."""
    try:
        return SAMPLER_PRESETS[name]
    except KeyError:
        valid = ", ".join(SAMPLER_PRESETS)
        raise InvalidSamplerConfig(f"unknown preset {name!r}; valid presets: {valid}") from None
