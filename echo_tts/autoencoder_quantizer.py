"""The S1-DAC downsampling residual vector quantizer (spec §5.2-§5.4).

Echo needs only the continuous z_q: the quantizer picks integer codes (semantic code, then
nine residual codes driven by the straight-through value), and z_q is recomputed from those
codes in upstream's summation order, before ``post_module``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder_transformer import WindowLimitedTransformer
from .config import AutoencoderConfig
from .layers import CausalConv1d, CausalConvTranspose1d, LegacyWNConv1d

CONVNEXT_KERNEL = 7
CONVNEXT_MLP_RATIO = 4
CONVNEXT_NORM_EPS = 1e-6
CONVNEXT_GAMMA_INIT = 1e-6  # upstream layer-scale init (only matters for random weights)


class ConvNeXtBlock(nn.Module):
    """x + gamma * pwconv2(GELU(pwconv1(LayerNorm(causal depthwise conv k7 (x))))), channels-first."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = CausalConv1d(dim, dim, CONVNEXT_KERNEL, groups=dim, weight_norm=False)
        self.norm = nn.LayerNorm(dim, eps=CONVNEXT_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, CONVNEXT_MLP_RATIO * dim)
        self.pwconv2 = nn.Linear(CONVNEXT_MLP_RATIO * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), CONVNEXT_GAMMA_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T) -> (B, C, T)."""
        h = self.dwconv(x).transpose(1, 2)  # (B, T, C)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))  # (B, T, C), exact erf GELU
        return x + (self.gamma * h).transpose(1, 2)  # (B, C, T)


class VectorQuantize(nn.Module):
    """One codebook: WN in_proj C->D, cosine nearest neighbour in the codebook, WN out_proj D->C."""

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.in_proj = LegacyWNConv1d(input_dim, codebook_dim)
        self.out_proj = LegacyWNConv1d(codebook_dim, input_dim)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def nearest_codes(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e: (B, D, T) -> codes (B, T) of the cosine-nearest codebook rows (first on ties)."""
        batch = z_e.shape[0]
        e = F.normalize(z_e.transpose(1, 2).reshape(-1, z_e.shape[1]))  # (B*T, D), L2, eps 1e-12
        c = F.normalize(self.codebook.weight)  # (K, D)
        dist = e.pow(2).sum(1, keepdim=True) - 2 * e @ c.t() + c.pow(2).sum(1, keepdim=True).t()  # (B*T, K)
        return (-dist).max(1).indices.view(batch, -1)  # (B, T)

    def code_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: (B, T) -> raw codebook rows (B, D, T)."""
        return F.embedding(codes, self.codebook.weight).transpose(1, 2)

    def quantize(self, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """residual: (B, C, T) -> (codes (B, T), out_proj of the straight-through value (B, C, T))."""
        z_e = self.in_proj(residual)  # (B, D, T)
        codes = self.nearest_codes(z_e)  # (B, T)
        straight_through = z_e + (self.code_vectors(codes) - z_e)  # (B, D, T), ~ the code vector
        return codes, self.out_proj(straight_through)  # (B, C, T)

    def from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: (B, T) -> out_proj(codebook rows) (B, C, T)."""
        return self.out_proj(self.code_vectors(codes))


class ResidualVectorQuantize(nn.Module):
    """Stages quantize what the earlier stages left: r_{i+1} = r_i - out_proj_i(straight-through_i)."""

    def __init__(self, input_dim: int, n_codebooks: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.quantizers = nn.ModuleList(
            VectorQuantize(input_dim, codebook_size, codebook_dim) for _ in range(n_codebooks)
        )

    def encode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, C, T) -> (codes (B, n, T), straight-through quantized sum (B, C, T))."""
        residual, total, codes = z, torch.zeros_like(z), []
        for quantizer in self.quantizers:
            codes_i, z_q_i = quantizer.quantize(residual)  # (B, T), (B, C, T)
            total = total + z_q_i
            residual = residual - z_q_i
            codes.append(codes_i)
        return torch.stack(codes, dim=1), total

    def from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: (B, n, T) -> sum of the stages' out_proj(code rows), added in stage order."""
        z_q = self.quantizers[0].from_codes(codes[:, 0])  # (B, C, T)
        for i, quantizer in enumerate(self.quantizers[1:], start=1):
            z_q = z_q + quantizer.from_codes(codes[:, i])  # (B, C, T)
        return z_q


def _resampler(dim: int, factor: int, *, up: bool) -> nn.Sequential:
    """Causal (transposed if ``up``) conv by ``factor``, then a ConvNeXt block."""
    conv = CausalConvTranspose1d if up else CausalConv1d
    return nn.Sequential(conv(dim, dim, factor, stride=factor, weight_norm=False), ConvNeXtBlock(dim))


class DownsampleResidualVectorQuantize(nn.Module):
    """downsample -> pre_module -> semantic VQ + residual VQ -> (z_q) -> post_module -> upsample."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        dim = config.latent_dim
        self.semantic_quantizer = ResidualVectorQuantize(dim, 1, config.semantic_codebook_size, config.codebook_dim)
        self.quantizer = ResidualVectorQuantize(dim, config.n_codebooks, config.codebook_size, config.codebook_dim)
        self.downsample = nn.Sequential(*(_resampler(dim, f, up=False) for f in config.downsample_factor))
        self.upsample = nn.Sequential(*(_resampler(dim, f, up=True) for f in reversed(config.downsample_factor)))
        self.pre_module = self._transformer(config)
        self.post_module = self._transformer(config)

    @staticmethod
    def _transformer(config: AutoencoderConfig) -> WindowLimitedTransformer:
        return WindowLimitedTransformer(
            config.latent_dim,
            num_layers=config.quantizer_transformer_layers,
            num_heads=config.quantizer_transformer_heads,
            ffn=config.quantizer_transformer_ffn,
            window=config.quantizer_transformer_window,
            block_size=config.quantizer_transformer_block_size,
            eps=config.norm_eps,
        )

    def encode_codes(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder output z: (B, C, 4T) -> integer codes (B, 1 + n_codebooks, T), semantic first."""
        z = self.pre_module(self.downsample(z))  # (B, C, T)
        semantic_codes, semantic_z = self.semantic_quantizer.encode(z)  # (B, 1, T), (B, C, T)
        residual_codes, _ = self.quantizer.encode(z - semantic_z)  # (B, n, T)
        return torch.cat([semantic_codes, residual_codes], dim=1)

    def codes_to_zq(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: (B, 1 + n, T) -> z_q (B, C, T) = semantic part + residual part (before post_module)."""
        return self.semantic_quantizer.from_codes(codes[:, :1]) + self.quantizer.from_codes(codes[:, 1:])

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q: (B, C, T) -> (B, C, 4T) for the decoder."""
        return self.upsample(self.post_module(z_q))
