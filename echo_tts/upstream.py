"""Upstream-compatible names (``inference.py`` / ``inference_blockwise.py`` of jordandare/echo-tts).

Code written against the upstream inference API runs unchanged on these thin wrappers over the
clean API: same function names, same keyword arguments, same defaults, same semantics —
including upstream's quirks that change numbers (one generator seeded ``rng_seed`` drawing the
whole batch's noise at once; text silently cut at ``max_length`` tokens; every batch item cropped
at item 0's flattening point). Differences: errors are the named ``echo_tts.errors`` exceptions
(e.g. a reference shorter than one speaker patch raises ``InvalidAudio`` instead of producing an
empty speaker), and ``compile=True`` compiles with ``torch.compile`` as upstream does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import audio as _audio
from .autoencoder import FishS1DAC
from .autoencoder_weights import load_autoencoder
from .compilation import compile_autoencoder, compile_echo_dit
from .config import (
    AE_DOWNSAMPLE_FACTOR,
    DEFAULT_AE_REPO,
    DEFAULT_MODEL_REPO,
    LATENT_DIM,
    MAX_REFERENCE_SECONDS,
    MAX_SEQUENCE_LENGTH,
    MAX_SPEAKER_LATENT_LENGTH,
    MAX_TEXT_LENGTH,
    PCA_FILE,
    SPEAKER_PATCH_SIZE,
    SamplerConfig,
)
from .errors import InvalidInput
from .model import EchoDiT
from .pca import PCAState
from .sampler import FLATTEN_STD, FLATTEN_WINDOW, encode_conditioning, first_flat_window, sample, sample_blockwise
from .speaker import CHUNK_SAMPLES, speaker_latents_from_audio
from .text import TextBatch, tokenize_truncating
from .weights import load_echo_dit, load_pca

__all__ = [
    "ae_decode",
    "ae_encode",
    "crop_audio_to_flattening_point",
    "find_flattening_point",
    "get_speaker_latent_and_mask",
    "get_text_input_ids_and_mask",
    "load_audio",
    "load_fish_ae_from_hf",
    "load_model_from_hf",
    "load_pca_state_from_hf",
    "sample_blockwise_euler_cfg_independent_guidances",
    "sample_euler_cfg_independent_guidances",
    "sample_pipeline",
]

SampleFn = Callable[..., torch.Tensor]


# --- loading ------------------------------------------------------------------------------
def load_model_from_hf(
    repo_id: str = DEFAULT_MODEL_REPO,
    device: str | torch.device = "cuda",
    dtype: torch.dtype | None = torch.bfloat16,
    compile: bool = False,
    token: str | None = None,
    delete_blockwise_modules: bool = False,
) -> EchoDiT:
    """EchoDiT in eval mode; ``compile`` wraps forward and the three K/V-cache builders."""
    model = load_echo_dit(repo_id, device=device, dtype=dtype, token=token, drop_blockwise=delete_blockwise_modules)
    if compile:
        compile_echo_dit(model, kv_caches=True)
    return model


def load_fish_ae_from_hf(
    repo_id: str = DEFAULT_AE_REPO,
    device: str | torch.device = "cuda",
    dtype: torch.dtype | None = torch.float32,
    compile: bool = False,
    token: str | None = None,
) -> FishS1DAC:
    """The S1-DAC codec; float32 keeps the stored dtypes, another dtype casts every float tensor."""
    ae = load_autoencoder(repo_id, device=device, dtype=dtype if dtype is not None else torch.float32, token=token)
    if compile:
        compile_autoencoder(ae)
    return ae


def load_pca_state_from_hf(
    repo_id: str = DEFAULT_MODEL_REPO,
    device: str | torch.device = "cuda",
    filename: str = PCA_FILE,
    token: str | None = None,
) -> PCAState:
    """``PCAState(pca_components, pca_mean, latent_scale: float)`` on ``device``."""
    return load_pca(repo_id, device=device, token=token, filename=filename)


def load_audio(path, max_duration: float = MAX_REFERENCE_SECONDS) -> torch.Tensor:
    """(1, N) float32 mono at 44.1 kHz: the first ``max_duration`` seconds, peak-guarded (spec §4.1)."""
    return _audio.load_audio(path, max_duration=max_duration)


# --- text ---------------------------------------------------------------------------------
def get_text_input_ids_and_mask(
    text_arr: Sequence[str],
    max_length: int | None,
    device: str | torch.device | None = None,
    normalize: bool = True,
    return_normalized_text: bool = False,
    pad_to_max: bool = True,
):
    """``(ids (B, L) int32, mask (B, L) bool)``, plus the normalised texts when ``return_normalized_text``.

    Rows longer than ``max_length`` are cut silently (BOS + the first ``max_length - 1`` bytes), as
    upstream. ``max_length=None`` pads to the longest row; ``pad_to_max=False`` trims the padding
    to the longest row (never longer than ``max_length``).
    """
    batch = tokenize_truncating(list(text_arr), max_length, normalize=normalize)
    ids, mask = batch.input_ids, batch.mask
    if not pad_to_max and ids.shape[1]:
        longest = int(mask.sum(dim=1).max())
        ids, mask = ids[:, :longest], mask[:, :longest]
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    if return_normalized_text:
        return ids, mask, list(batch.normalized)
    return ids, mask


# --- sampling -----------------------------------------------------------------------------
def _conditioning(model, speaker_latent, speaker_mask, text_input_ids, text_mask):
    text = TextBatch(text_input_ids, text_mask, [""] * text_input_ids.shape[0])
    return encode_conditioning(model, text, speaker_latent, speaker_mask)


def sample_euler_cfg_independent_guidances(
    model: EchoDiT,
    speaker_latent: torch.Tensor,
    speaker_mask: torch.Tensor,
    text_input_ids: torch.Tensor,
    text_mask: torch.Tensor,
    rng_seed: int,
    num_steps: int,
    cfg_scale_text: float,
    cfg_scale_speaker: float,
    cfg_min_t: float,
    cfg_max_t: float,
    truncation_factor: float | None,
    rescale_k: float | None,
    rescale_sigma: float | None,
    speaker_kv_scale: float | None,
    speaker_kv_max_layers: int | None,
    speaker_kv_min_t: float | None,
    sequence_length: int = MAX_SEQUENCE_LENGTH,
) -> torch.Tensor:
    """Latents (B, sequence_length, 80) float32 (spec §6). One generator seeded ``rng_seed`` draws
    the (B, S, 80) noise at once, exactly as upstream (for B > 1 item i differs from a render of
    item i alone; the clean :func:`echo_tts.sampler.sample` takes one seed per item)."""
    config = SamplerConfig(
        num_steps=num_steps, cfg_scale_text=cfg_scale_text, cfg_scale_speaker=cfg_scale_speaker,
        cfg_min_t=cfg_min_t, cfg_max_t=cfg_max_t, truncation_factor=truncation_factor, rescale_k=rescale_k,
        rescale_sigma=rescale_sigma, speaker_kv_scale=speaker_kv_scale, speaker_kv_max_layers=speaker_kv_max_layers,
        speaker_kv_min_t=speaker_kv_min_t, sequence_length=sequence_length,
    )  # fmt: skip
    cond = _conditioning(model, speaker_latent, speaker_mask, text_input_ids, text_mask)
    return sample(model, cond, config, seeds=int(rng_seed))


def sample_blockwise_euler_cfg_independent_guidances(
    model: EchoDiT,
    speaker_latent: torch.Tensor,
    speaker_mask: torch.Tensor,
    text_input_ids: torch.Tensor,
    text_mask: torch.Tensor,
    rng_seed: int,
    block_sizes: Sequence[int],
    num_steps: int,
    cfg_scale_text: float,
    cfg_scale_speaker: float,
    cfg_min_t: float,
    cfg_max_t: float,
    truncation_factor: float | None,
    rescale_k: float | None,
    rescale_sigma: float | None,
    speaker_kv_scale: float | None,
    speaker_kv_max_layers: int | None,
    speaker_kv_min_t: float | None,
    continuation_latent: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blockwise generation (spec §7): (B, P + sum(block_sizes), 80) with the continuation prefix first."""
    config = SamplerConfig(
        num_steps=num_steps, cfg_scale_text=cfg_scale_text, cfg_scale_speaker=cfg_scale_speaker,
        cfg_min_t=cfg_min_t, cfg_max_t=cfg_max_t, truncation_factor=truncation_factor, rescale_k=rescale_k,
        rescale_sigma=rescale_sigma, speaker_kv_scale=speaker_kv_scale, speaker_kv_max_layers=speaker_kv_max_layers,
        speaker_kv_min_t=speaker_kv_min_t,
    )  # fmt: skip
    cond = _conditioning(model, speaker_latent, speaker_mask, text_input_ids, text_mask)
    blocks = list(block_sizes)
    return sample_blockwise(model, cond, config, blocks, seeds=int(rng_seed), continuation=continuation_latent)


def find_flattening_point(
    data: torch.Tensor,
    target_value: float = 0.0,
    window_size: int = FLATTEN_WINDOW,
    std_threshold: float = FLATTEN_STD,
) -> int:
    """First i whose ``window_size``-frame window (after appending that many zero frames) has unbiased
    std < ``std_threshold`` and |mean - target_value| < 0.1; ``len(data)`` if none (spec §6.7).

    Upstream's signature over :func:`echo_tts.sampler.first_flat_window`; ``data`` is (S, ...)."""
    return first_flat_window(data, target_value=target_value, window_size=window_size, std_threshold=std_threshold)


def crop_audio_to_flattening_point(audio: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """``audio[..., : find_flattening_point(latent) * 2048]``: every row at ``latent``'s point (upstream)."""
    return audio[..., : find_flattening_point(latent) * AE_DOWNSAMPLE_FACTOR]


# --- autoencoder and speaker -----------------------------------------------------------------
def ae_encode(fish_ae: FishS1DAC, pca_state: PCAState, audio: torch.Tensor) -> torch.Tensor:
    """audio (B, 1, N) -> latents (B, ceil(N / 2048), 80) float32 (spec §4.3)."""
    return pca_state.encode(fish_ae.encode_zq(audio))


def ae_decode(fish_ae: FishS1DAC, pca_state: PCAState, z: torch.Tensor) -> torch.Tensor:
    """latents (B, T, 80) -> waveform (B, 1, 2048 T) float32 (spec §4.3)."""
    z_q = pca_state.decode(z)  # (B, 1024, T) float32
    return fish_ae.decode_zq(z_q.to(fish_ae.dtype)).float()


def get_speaker_latent_and_mask(
    fish_ae: FishS1DAC,
    pca_state: PCAState,
    audio: torch.Tensor,
    max_speaker_latent_length: int = MAX_SPEAKER_LATENT_LENGTH,
    audio_chunk_size: int = CHUNK_SAMPLES,
    pad_to_max: bool = False,
    divis_by_patch_size: int = SPEAKER_PATCH_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speaker latents (1, T, 80) float32 and mask (1, T) bool of a (1, N) reference (spec §4.2).

    ``audio_chunk_size`` (samples per independently encoded chunk) may be any positive multiple of
    2048 (whole latent frames); ``divis_by_patch_size`` must be the speaker patch size, 4.
    """
    if audio_chunk_size < AE_DOWNSAMPLE_FACTOR or audio_chunk_size % AE_DOWNSAMPLE_FACTOR:
        raise InvalidInput(
            f"audio_chunk_size must be a positive multiple of {AE_DOWNSAMPLE_FACTOR} samples (whole latent "
            f"frames), got {audio_chunk_size}"
        )
    if divis_by_patch_size != SPEAKER_PATCH_SIZE:
        raise InvalidInput(f"only divis_by_patch_size={SPEAKER_PATCH_SIZE} (the speaker patch size) is supported")
    bucket = max_speaker_latent_length if pad_to_max else None
    speaker = speaker_latents_from_audio(
        audio,
        lambda chunk: ae_encode(fish_ae, pca_state, chunk),
        max_latents=max_speaker_latent_length,
        bucket=bucket,
        chunk_latents=audio_chunk_size // AE_DOWNSAMPLE_FACTOR,
    )
    return speaker.latents.to(audio.device), speaker.mask.to(audio.device)


def sample_pipeline(
    model: EchoDiT,
    fish_ae: FishS1DAC,
    pca_state: PCAState,
    sample_fn: SampleFn,
    text_prompt: str,
    speaker_audio: torch.Tensor | None,
    rng_seed: int,
    pad_to_max_speaker_latent_length: int | None = None,
    pad_to_max_text_length: int | None = None,
    normalize_text: bool = True,
) -> tuple[torch.Tensor, list[str]]:
    """Text (+ reference audio (1, N)) -> (cropped audio (1, 1, N') float32, [normalised text]).

    ``sample_fn(model, speaker_latent, speaker_mask, text_input_ids, text_mask, rng_seed)`` is
    usually ``functools.partial(sample_euler_cfg_independent_guidances, num_steps=..., ...)``.
    Text ids are padded to ``min(pad_to_max_text_length or 768, 768)``; a speaker bucket pads (and
    caps) the reference latents; no reference means a fully masked speaker of bucket (or 4) zeros.
    """
    device = model.device
    text_length = min(pad_to_max_text_length or MAX_TEXT_LENGTH, MAX_TEXT_LENGTH)
    ids, mask, normalized = get_text_input_ids_and_mask(
        [text_prompt], text_length, device=device, normalize=normalize_text, return_normalized_text=True
    )
    if speaker_audio is None:
        length = pad_to_max_speaker_latent_length or 4
        speaker_latent = torch.zeros((1, length, LATENT_DIM), device=device, dtype=model.dtype)
        speaker_mask = torch.zeros((1, length), device=device, dtype=torch.bool)
    else:
        speaker_latent, speaker_mask = get_speaker_latent_and_mask(
            fish_ae,
            pca_state,
            speaker_audio.to(device=fish_ae.device, dtype=fish_ae.dtype),
            max_speaker_latent_length=pad_to_max_speaker_latent_length or MAX_SPEAKER_LATENT_LENGTH,
            pad_to_max=pad_to_max_speaker_latent_length is not None,
        )
    latent_out = sample_fn(model, speaker_latent, speaker_mask, ids, mask, rng_seed)
    audio_out = ae_decode(fish_ae, pca_state, latent_out)  # (B, 1, 2048 S)
    return crop_audio_to_flattening_point(audio_out, latent_out[0]), normalized
