"""Echo-TTS inference library: EchoDiT, the S1-DAC autoencoder, sampling, text and audio.

    from echo_tts import Pipeline
    pipe = Pipeline.from_pretrained(device="cuda")
    voice = pipe.encode_speaker("reference.wav")
    result = pipe.synthesize("Hello there.", voice, "Independent-High-Speaker-CFG", seed=0)

The upstream inference names (``load_model_from_hf``, ``sample_pipeline``, ...) are available
here too, as thin wrappers (:mod:`echo_tts.upstream`).

Importing this package has no side effects and does not import torch: the names below are
resolved from their modules on first use, so torch-free code may import ``echo_tts.config``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import (
    DEFAULT_PRESET,
    SAMPLER_PRESETS,
    AutoencoderConfig,
    EchoDiTConfig,
    SamplerConfig,
    sampler_preset,
)
from .errors import (
    Cancelled,
    CheckpointMismatch,
    EchoTTSError,
    InvalidAudio,
    InvalidInput,
    InvalidSamplerConfig,
    TextTooLong,
    UnsupportedFormat,
    WeightsError,
    WeightsNotFound,
)

_LAZY = {
    "CanvasPolicy": "canvas",
    "Pipeline": "pipeline",
    "SynthesisResult": "pipeline",
    "SpeakerLatents": "speaker",
    "EchoDiT": "model",
    "FishS1DAC": "autoencoder",
    "PCAState": "pca",
    "load_echo_dit": "weights",
    "load_pca": "weights",
    "load_autoencoder": "autoencoder_weights",
    "encode_audio": "audio",
    "AUDIO_FORMATS": "audio",
    "join_segments": "audio",
    "normalize_text": "text",
    "split_text": "text",
    # upstream-compatible names
    "ae_decode": "upstream",
    "ae_encode": "upstream",
    "crop_audio_to_flattening_point": "upstream",
    "find_flattening_point": "upstream",
    "get_speaker_latent_and_mask": "upstream",
    "get_text_input_ids_and_mask": "upstream",
    "load_audio": "upstream",
    "load_fish_ae_from_hf": "upstream",
    "load_model_from_hf": "upstream",
    "load_pca_state_from_hf": "upstream",
    "sample_blockwise_euler_cfg_independent_guidances": "upstream",
    "sample_euler_cfg_independent_guidances": "upstream",
    "sample_pipeline": "upstream",
}

__all__ = [
    "DEFAULT_PRESET",
    "SAMPLER_PRESETS",
    "AutoencoderConfig",
    "Cancelled",
    "CheckpointMismatch",
    "EchoDiTConfig",
    "EchoTTSError",
    "InvalidAudio",
    "InvalidInput",
    "InvalidSamplerConfig",
    "SamplerConfig",
    "TextTooLong",
    "UnsupportedFormat",
    "WeightsError",
    "WeightsNotFound",
    "sampler_preset",
    *_LAZY,
]

if TYPE_CHECKING:  # static analysers see the real imports
    from .audio import AUDIO_FORMATS, encode_audio, join_segments  # noqa: F401
    from .autoencoder import FishS1DAC  # noqa: F401
    from .autoencoder_weights import load_autoencoder  # noqa: F401
    from .canvas import CanvasPolicy  # noqa: F401
    from .model import EchoDiT  # noqa: F401
    from .pca import PCAState  # noqa: F401
    from .pipeline import Pipeline, SynthesisResult  # noqa: F401
    from .speaker import SpeakerLatents  # noqa: F401
    from .text import normalize_text, split_text  # noqa: F401
    from .upstream import (  # noqa: F401
        ae_decode,
        ae_encode,
        crop_audio_to_flattening_point,
        find_flattening_point,
        get_speaker_latent_and_mask,
        get_text_input_ids_and_mask,
        load_audio,
        load_fish_ae_from_hf,
        load_model_from_hf,
        load_pca_state_from_hf,
        sample_blockwise_euler_cfg_independent_guidances,
        sample_euler_cfg_independent_guidances,
        sample_pipeline,
    )
    from .weights import load_echo_dit, load_pca  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'echo_tts' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
