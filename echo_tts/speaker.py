"""Speaker conditioning: reference audio -> speaker latents + mask (spec §4.2), and their files.

A :class:`SpeakerLatents` is what a stored voice caches: the reference encoded once by the
autoencoder + PCA, saved as safetensors (``speaker_latents`` (1, T, 80) float32,
``speaker_mask`` (1, T) bool, metadata ``format``/``version``).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import safetensors.torch
import torch
import torch.nn.functional as F

from .config import AE_DOWNSAMPLE_FACTOR, LATENT_DIM, MAX_SPEAKER_LATENT_LENGTH, SAMPLE_RATE, SPEAKER_CHUNK_LATENTS
from .config import SPEAKER_PATCH_SIZE as PATCH
from .errors import InvalidAudio, InvalidInput

__all__ = [
    "FILE_FORMAT",
    "FILE_VERSION",
    "MIN_REFERENCE_SAMPLES",
    "SpeakerLatents",
    "batch_speakers",
    "empty_speaker",
    "speaker_latents_from_audio",
]

FILE_FORMAT = "echo-tts-speaker-latents"
FILE_VERSION = "1"
LATENTS_KEY = "speaker_latents"
MASK_KEY = "speaker_mask"
CHUNK_SAMPLES = SPEAKER_CHUNK_LATENTS * AE_DOWNSAMPLE_FACTOR  # the default chunk: 1,310,720 samples, ~29.7 s
MIN_REFERENCE_SAMPLES = PATCH * AE_DOWNSAMPLE_FACTOR  # 8192 samples, ~0.19 s: one speaker patch

ChunkEncoder = Callable[[torch.Tensor], torch.Tensor]  # (1, 1, C) audio -> (1, C / 2048, 80) latents


@dataclass(frozen=True, eq=False)
class SpeakerLatents:
    """Encoded reference: ``latents`` (1, T, 80) float32 and per-frame ``mask`` (1, T) bool.

    T is a positive multiple of 4 (the speaker patch size). Construction checks shapes and
    dtypes and raises :class:`InvalidInput` naming what is wrong.
    """

    latents: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        _check(self.latents, self.mask)

    @property
    def length(self) -> int:
        """T, the number of latent frames (valid or not)."""
        return int(self.latents.shape[1])

    @property
    def valid_frames(self) -> int:
        """How many frames the mask marks valid."""
        return int(self.mask.sum())

    def to_bytes(self) -> bytes:
        """The safetensors file as bytes (bit-exact round trip through :meth:`from_bytes`)."""
        return safetensors.torch.save(self._tensors(), metadata={"format": FILE_FORMAT, "version": FILE_VERSION})

    @classmethod
    def from_bytes(cls, data: bytes) -> SpeakerLatents:
        """Read :meth:`to_bytes` output; :class:`InvalidInput` for anything else."""
        metadata = _read_metadata(data)
        if metadata.get("format") != FILE_FORMAT:
            raise InvalidInput(f"not a speaker-latents file (metadata format {metadata.get('format')!r})")
        if metadata.get("version") != FILE_VERSION:
            raise InvalidInput(
                f"unsupported speaker-latents version {metadata.get('version')!r}; expected {FILE_VERSION}"
            )
        try:
            tensors = safetensors.torch.load(bytes(data))
        except Exception as error:  # safetensors raises its own untyped errors
            raise InvalidInput(f"corrupt speaker-latents file ({error})") from None
        missing = sorted({LATENTS_KEY, MASK_KEY} - set(tensors))
        if missing:
            raise InvalidInput(f"speaker-latents file lacks tensor(s): {', '.join(missing)}")
        return cls(tensors[LATENTS_KEY], tensors[MASK_KEY])

    def save(self, path: str | os.PathLike) -> None:
        """Write the safetensors file to ``path``."""
        with open(path, "wb") as handle:
            handle.write(self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpeakerLatents:
        """Read a file written by :meth:`save`."""
        with open(path, "rb") as handle:
            return cls.from_bytes(handle.read())

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {
            LATENTS_KEY: self.latents.detach().to("cpu").contiguous(),
            MASK_KEY: self.mask.detach().to("cpu").contiguous(),
        }


def _check(latents: torch.Tensor, mask: torch.Tensor) -> None:
    if not isinstance(latents, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise InvalidInput("speaker latents and mask must be tensors")
    if latents.dtype != torch.float32 or mask.dtype != torch.bool:
        raise InvalidInput(f"speaker latents must be float32 and mask bool, got {latents.dtype} and {mask.dtype}")
    if latents.ndim != 3 or latents.shape[0] != 1 or latents.shape[2] != LATENT_DIM:
        raise InvalidInput(f"speaker latents must have shape (1, T, {LATENT_DIM}), got {tuple(latents.shape)}")
    length = latents.shape[1]
    if tuple(mask.shape) != (1, length):
        raise InvalidInput(f"speaker mask must have shape (1, {length}), got {tuple(mask.shape)}")
    if length < PATCH or length % PATCH:
        raise InvalidInput(f"speaker length must be a positive multiple of {PATCH} frames, got {length}")


def _read_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (the 8-byte length, then JSON)."""
    if len(data) < 8:
        raise InvalidInput("not a speaker-latents file (too short for a safetensors header)")
    (size,) = struct.unpack("<Q", bytes(data[:8]))
    if size > len(data) - 8:
        raise InvalidInput("not a speaker-latents file (truncated safetensors header)")
    try:
        header = json.loads(bytes(data[8 : 8 + size]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInput("not a speaker-latents file (safetensors header is not JSON)") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def empty_speaker(length: int = PATCH) -> SpeakerLatents:
    """The "no reference" speaker: ``length`` zero latents with an all-False mask (spec §4.2).

    The speaker encoder still runs on the zeros; the mask hides them from the DiT. Pass the
    bucket size as ``length`` to match upstream's bucket mode.
    """
    return SpeakerLatents(torch.zeros(1, length, LATENT_DIM), torch.zeros(1, length, dtype=torch.bool))


@torch.no_grad()
def speaker_latents_from_audio(
    audio: torch.Tensor,
    encode: ChunkEncoder,
    *,
    max_latents: int = MAX_SPEAKER_LATENT_LENGTH,
    bucket: int | None = None,
    chunk_latents: int = SPEAKER_CHUNK_LATENTS,
) -> SpeakerLatents:
    """Encode a reference clip ``audio`` (1, N) at 44.1 kHz into speaker latents (spec §4.2).

    ``encode`` maps (1, 1, K·2048) audio to (1, K, 80) latents (AE + PCA), K = ``chunk_latents``
    (640 by default: 1,310,720 samples); the audio's dtype and device are passed through to it
    unchanged. Steps, as upstream:

    1. Truncate to M·2048 samples, M = ``bucket`` when given, else ``max_latents``.
    2. Cut into K-latent chunks (K·2048 samples), zero-pad the last on the right, encode
       each chunk on its own and concatenate: T_raw = K·ceil(N / chunk) frames.
    3. Frame j is valid iff j < floor(N / 2048).
    4. Without a bucket keep only the valid frames. With a bucket, pad with zero latents
       (mask False) up to ``bucket`` frames when T_raw is shorter, never crop when longer;
       frames past the valid ones keep the encodings of the padding.
    5. Truncate to a multiple of 4 frames.

    Raises :class:`InvalidAudio` for a clip shorter than 8192 samples (one speaker patch).
    """
    limit = bucket if bucket is not None else max_latents
    if int(limit) < PATCH:
        raise InvalidInput(f"max_latents/bucket must be >= {PATCH} latent frames, got {limit}")
    chunk_latents = int(chunk_latents)
    if chunk_latents < 1:
        raise InvalidInput(f"chunk_latents must be >= 1 latent frame, got {chunk_latents}")
    if not isinstance(audio, torch.Tensor) or audio.ndim != 2 or audio.shape[0] != 1:
        shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
        raise InvalidAudio(f"reference audio must be a (1, N) tensor, got {shape}")
    audio = audio[:, : int(limit) * AE_DOWNSAMPLE_FACTOR]  # (1, N)
    num_samples = audio.shape[1]
    if num_samples < MIN_REFERENCE_SAMPLES:
        raise InvalidAudio(
            f"reference audio is too short: {num_samples} samples; the minimum is {MIN_REFERENCE_SAMPLES} "
            f"samples ({MIN_REFERENCE_SAMPLES / SAMPLE_RATE:.3f} s at 44.1 kHz, one speaker patch)"
        )
    chunk = chunk_latents * AE_DOWNSAMPLE_FACTOR  # samples per chunk
    pieces = [_encode_chunk(audio[:, i : i + chunk], encode, chunk_latents) for i in range(0, num_samples, chunk)]
    latents = torch.cat(pieces, dim=1)  # (1, T_raw, 80)
    valid = num_samples // AE_DOWNSAMPLE_FACTOR
    mask = torch.arange(latents.shape[1]).unsqueeze(0) < valid  # (1, T_raw)
    if bucket is None:
        latents, mask = latents[:, :valid], mask[:, :valid]
    elif latents.shape[1] < bucket:
        extra = int(bucket) - latents.shape[1]
        latents = torch.cat([latents, latents.new_zeros(1, extra, LATENT_DIM)], dim=1)  # (1, bucket, 80)
        mask = torch.cat([mask, mask.new_zeros(1, extra)], dim=1)  # (1, bucket)
    length = latents.shape[1] // PATCH * PATCH
    return SpeakerLatents(latents[:, :length].contiguous(), mask[:, :length].contiguous())


def _encode_chunk(chunk: torch.Tensor, encode: ChunkEncoder, chunk_latents: int) -> torch.Tensor:
    """chunk (1, <=K·2048) audio, zero-padded on the right to K·2048 samples -> (1, K, 80) float32 on the CPU."""
    chunk = F.pad(chunk, (0, chunk_latents * AE_DOWNSAMPLE_FACTOR - chunk.shape[1]))  # (1, C), zeros on the right
    latents = encode(chunk.unsqueeze(0))  # (1, K, 80)
    if tuple(latents.shape) != (1, chunk_latents, LATENT_DIM):
        raise ValueError(
            f"encode returned shape {tuple(latents.shape)} for one chunk; expected (1, {chunk_latents}, {LATENT_DIM})"
        )
    return latents.to("cpu", torch.float32)


def batch_speakers(speakers: Sequence[SpeakerLatents]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack speakers for a batch: latents (B, T, 80) and mask (B, T), T the longest length.

    Shorter items are padded at the end with zero latents and False mask, which cannot
    change their valid frames (causal speaker encoder + key mask).
    """
    if not speakers:
        raise InvalidInput("batch_speakers needs at least one speaker")
    length = max(s.length for s in speakers)
    latents = torch.zeros(len(speakers), length, LATENT_DIM)
    mask = torch.zeros(len(speakers), length, dtype=torch.bool)
    for i, speaker in enumerate(speakers):
        latents[i, : speaker.length] = speaker.latents[0]
        mask[i, : speaker.length] = speaker.mask[0]
    return latents, mask
