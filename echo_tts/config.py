"""Frozen configuration dataclasses, named presets and the model's fixed constants.

Every number here comes from the upstream Echo-TTS release (see
``shared/reference/echo_tts_spec.md``); the section of the spec is named beside each.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidSamplerConfig, WeightsError

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
FLATTEN_WINDOW = 20  # end-of-speech scan (spec §6.7): frames per flat window, zero frames appended
DEFAULT_PAUSE_S = 0.25  # silence put between the rendered pieces of a long text

# --- the published weights (spec §1.4) -----------------------------------------------------
DEFAULT_MODEL_REPO = "jordand/echo-tts-base"  # EchoDiT weights + PCA basis
DEFAULT_AE_REPO = "jordand/fish-s1-dac-min"  # the Fish S1-DAC autoencoder
WEIGHTS_FILE = "pytorch_model.safetensors"  # the weights file name in both repos
CONFIG_FILE = "config.json"  # architecture file: the AE repo has one, the DiT repo none (ours write it)
PCA_FILE = "pca_state.safetensors"  # the PCA basis, in the DiT repo


def unknown_fields(dataclass_or_instance: Any, names: Iterable[str]) -> list[str]:
    """The names (sorted) that are not fields of the dataclass: config files and overrides name them."""
    known = {f.name for f in dataclasses.fields(dataclass_or_instance)}
    return sorted(set(names) - known)


@dataclass(frozen=True)
class EchoDiTConfig:
    """Hyper-parameters of EchoDiT, named as the upstream constructor arguments (spec §3.1)."""

    latent_size: int = LATENT_DIM
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
    speaker_patch_size: int = SPEAKER_PATCH_SIZE
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
        unknown = unknown_fields(cls, values)
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
        unknown = unknown_fields(self, overrides)
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


# --- Fish S1-DAC autoencoder (spec §5.1) ---------------------------------------------------
# The published config.json carries only these fields; the transformer sizes are hard-coded
# upstream and are extra fields here (with the full-size values as defaults).
AUTOENCODER_PUBLISHED_FIELDS = (
    "sample_rate",
    "encoder_dim",
    "encoder_rates",
    "latent_dim",
    "decoder_dim",
    "decoder_rates",
    "n_codebooks",
    "codebook_size",
    "codebook_dim",
    "semantic_codebook_size",
    "causal",
)


@dataclass(frozen=True)
class AutoencoderConfig:
    """Hyper-parameters of the Fish S1-DAC codec; defaults are the published ``fish-s1-dac-min``.

    The encoder transformer sits in the last encoder block (width ``encoder_dim * 2**len(rates)``);
    the quantizer's pre/post transformers work at ``latent_dim``. One latent frame always covers
    ``AE_DOWNSAMPLE_FACTOR`` samples: prod(encoder_rates) * prod(downsample_factor) == 2048.
    """

    sample_rate: int = SAMPLE_RATE
    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    latent_dim: int = AE_LATENT_DIM
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    n_codebooks: int = 9
    codebook_size: int = 1024
    codebook_dim: int = 8
    semantic_codebook_size: int = 4096
    causal: bool = True
    downsample_factor: tuple[int, ...] = (2, 2)
    encoder_transformer_layers: int = 4
    encoder_transformer_heads: int = 16
    encoder_transformer_ffn: int = 3072
    encoder_transformer_window: int = 512  # frames at the 512-sample hop
    encoder_transformer_block_size: int = 16384  # RoPE table length (positions)
    quantizer_transformer_layers: int = 8
    quantizer_transformer_heads: int = 16
    quantizer_transformer_ffn: int = 3072
    quantizer_transformer_window: int = 128  # latent frames
    quantizer_transformer_block_size: int = 4096
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("encoder_rates", "decoder_rates", "downsample_factor"):
            object.__setattr__(self, name, tuple(int(r) for r in getattr(self, name)))
        if not self.causal:
            raise ValueError("only the causal S1-DAC (causal=true) is implemented")
        if self.frame_length != AE_DOWNSAMPLE_FACTOR:
            raise ValueError(
                f"prod(encoder_rates) * prod(downsample_factor) = {self.frame_length}, "
                f"must be {AE_DOWNSAMPLE_FACTOR} samples per latent frame"
            )
        if math.prod(self.decoder_rates) != self.hop_length:
            raise ValueError(f"prod(decoder_rates) must equal prod(encoder_rates) = {self.hop_length}")
        if self.decoder_dim % 2 ** len(self.decoder_rates):
            raise ValueError(f"decoder_dim={self.decoder_dim} must be divisible by 2**len(decoder_rates)")
        for width, heads, name in (
            (self.encoder_transformer_dim, self.encoder_transformer_heads, "encoder transformer"),
            (self.latent_dim, self.quantizer_transformer_heads, "quantizer transformer"),
        ):
            if width % heads or (width // heads) % 2:
                raise ValueError(f"{name}: width {width} must split into {heads} heads of even size")

    @property
    def hop_length(self) -> int:
        """Samples per encoder frame (512)."""
        return math.prod(self.encoder_rates)

    @property
    def frame_length(self) -> int:
        """Samples per latent frame (2048)."""
        return self.hop_length * math.prod(self.downsample_factor)

    @property
    def encoder_transformer_dim(self) -> int:
        return self.encoder_dim * 2 ** len(self.encoder_rates)

    def to_dict(self) -> dict:
        """JSON-ready mapping (the published fields first), the inverse of :meth:`from_dict`."""
        values = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict) -> AutoencoderConfig:
        """Build from a ``config.json`` mapping (the published one or ours); bad keys raise WeightsError."""
        unknown = unknown_fields(cls, values)
        if unknown:
            raise WeightsError(f"unknown autoencoder config keys: {', '.join(unknown)}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"invalid autoencoder config: {exc}") from exc


# A small codec with the same structure and the same 2048-samples-per-latent rule, for tests
# and the tiny random checkpoints; decoding 640 latents takes well under a second on 2 cores.
TINY_AUTOENCODER_CONFIG = AutoencoderConfig(
    encoder_dim=4,
    latent_dim=32,
    decoder_dim=16,
    n_codebooks=3,
    codebook_size=16,
    codebook_dim=4,
    semantic_codebook_size=32,
    encoder_transformer_layers=1,
    encoder_transformer_heads=4,
    encoder_transformer_ffn=96,
    encoder_transformer_window=64,
    quantizer_transformer_layers=1,
    quantizer_transformer_heads=2,
    quantizer_transformer_ffn=64,
    quantizer_transformer_window=16,
)
AUTOENCODER_PRESETS: dict[str, AutoencoderConfig] = {
    "fish-s1-dac-min": AutoencoderConfig(),
    "tiny": TINY_AUTOENCODER_CONFIG,
}
