"""A recording wrapper around a real EchoDiT, and conditioning builders, for the sampler tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from echo_tts.sampler import encode_conditioning
from echo_tts.text import encode_texts


@dataclass
class Call:
    """What one forward call saw and returned (all cloned)."""

    x: torch.Tensor
    t: torch.Tensor
    text_mask: torch.Tensor
    speaker_mask: torch.Tensor
    speaker_kv: list[tuple[torch.Tensor, torch.Tensor]]
    latent_rows: int | None
    start_pos: int
    out: torch.Tensor


@dataclass
class SpyDiT:
    """Delegates to ``model`` and records every forward call and latent-cache request."""

    model: torch.nn.Module
    calls: list[Call] = field(default_factory=list)
    latent_buffers: list[torch.Tensor] = field(default_factory=list)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    def get_kv_cache_text(self, ids, mask):
        return self.model.get_kv_cache_text(ids, mask)

    def get_kv_cache_speaker(self, latents):
        return self.model.get_kv_cache_speaker(latents)

    def get_kv_cache_latent(self, latents):
        self.latent_buffers.append(latents.clone())
        return self.model.get_kv_cache_latent(latents)

    def __call__(self, x, t, *, text_kv, text_mask, speaker_kv, speaker_mask, latent_kv=None, start_pos=0):
        out = self.model(
            x,
            t,
            text_kv=text_kv,
            text_mask=text_mask,
            speaker_kv=speaker_kv,
            speaker_mask=speaker_mask,
            latent_kv=latent_kv,
            start_pos=start_pos,
        )
        self.calls.append(
            Call(
                x=x.clone(),
                t=t.clone(),
                text_mask=text_mask.clone(),
                speaker_mask=speaker_mask.clone(),
                speaker_kv=[(k.clone(), v.clone()) for k, v in speaker_kv],
                latent_rows=None if latent_kv is None else latent_kv[0][0].shape[0],
                start_pos=start_pos,
                out=out.clone(),
            )
        )
        return out


def speaker_inputs(lengths: list[int], *, pad_to: int | None = None, seed: int = 0):
    """Random speaker latents (B, T, 80) padded with zeros to the longest (or ``pad_to``), and
    the matching per-frame mask (B, T). Row r draws from seed + r, so a row can be rebuilt alone."""
    total = pad_to or max(lengths)
    latents = torch.zeros((len(lengths), total, 80))
    mask = torch.zeros((len(lengths), total), dtype=torch.bool)
    for row, length in enumerate(lengths):
        generator = torch.Generator().manual_seed(seed + row)
        latents[row, :length] = torch.randn((length, 80), generator=generator)
        mask[row, :length] = True
    return latents, mask


def make_conditioning(model, texts: list[str], speaker_lengths: list[int], *, seed: int = 0, pad_to=None):
    latents, mask = speaker_inputs(speaker_lengths, pad_to=pad_to, seed=seed)
    return encode_conditioning(model, encode_texts(texts), latents, mask)
