"""PCA projection between S1-DAC z_q (1024-d) and the 80-d EchoDiT latents (spec §4.3). Always float32."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PCAState:
    """Fitted PCA basis: ``pca_components`` (80, 1024) row per component, ``pca_mean`` (1024,),
    ``latent_scale`` a Python float (float32(1/18) in the published file)."""

    pca_components: torch.Tensor
    pca_mean: torch.Tensor
    latent_scale: float

    def encode(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q: (B, 1024, T) any dtype -> latents (B, T, 80) float32: (z - mean) @ components^T * scale."""
        z = z_q.float().transpose(1, 2)  # (B, T, 1024)
        projected = torch.matmul(z - self.pca_mean, self.pca_components.T)  # (B, T, 80)
        return projected * self.latent_scale  # (B, T, 80)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents: (B, T, 80) -> z_q (B, 1024, T) float32: (y / scale) @ components + mean."""
        y = latents.float() / self.latent_scale  # (B, T, 80) true division, as upstream
        z = torch.matmul(y, self.pca_components) + self.pca_mean  # (B, T, 1024)
        return z.transpose(1, 2)  # (B, 1024, T)

    def to(self, device: str | torch.device) -> PCAState:
        """A copy with both tensors on ``device`` (still float32)."""
        return dataclasses.replace(
            self, pca_components=self.pca_components.to(device), pca_mean=self.pca_mean.to(device)
        )
