"""The S1-DAC WindowLimitedTransformer (spec §5.2): causal sliding-window attention with RoPE.

Used once in the encoder (window 512 frames, RoPE table 16384) and twice in the quantizer
(pre/post module, window 128 latents, table 4096). Channels-first in and out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointMismatch, InvalidInput
from .layers import CastFirstRMSNorm, SwiGLU, apply_rope_table, rope_table

LAYER_SCALE_INIT = 1e-2  # upstream LayerScale init value (only matters for random weights)


def window_mask(length: int, window: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool (length, length): query i sees keys j with max(0, i - window + 1) <= j <= i."""
    positions = torch.arange(length, device=device)
    distance = positions[:, None] - positions[None, :]  # (T, T): i - j
    return (distance >= 0) & (distance < window)


class LayerScale(nn.Module):
    """Per-channel multiply by ``gamma``."""

    def __init__(self, dim: int, init: float = LAYER_SCALE_INIT) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head attention, q/k/v stacked in ``wqkv``; RoPE on every head; no q/k norm, no bias."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, table: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C); table: (T, Dh/2, 2); mask: (T, T) bool -> (B, T, C)."""
        batch, length, _ = x.shape
        heads_shape = (batch, length, self.num_heads, self.dim // self.num_heads)
        q, k, v = self.wqkv(x).split(self.dim, dim=-1)  # (B, T, C) each
        q = apply_rope_table(q.view(heads_shape), table)  # (B, T, H, Dh)
        k = apply_rope_table(k.view(heads_shape), table)  # (B, T, H, Dh)
        v = v.view(heads_shape)  # (B, T, H, Dh)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, Dh), scale 1/sqrt(Dh)
        return self.wo(y.transpose(1, 2).reshape(batch, length, self.dim))  # (B, T, C)


class TransformerBlock(nn.Module):
    """Pre-norm block: h = x + g_a * Attn(norm(x)); out = h + g_f * SwiGLU(norm(h))."""

    def __init__(self, dim: int, num_heads: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.attention = Attention(dim, num_heads)
        self.feed_forward = SwiGLU(dim, ffn)
        self.ffn_norm = CastFirstRMSNorm(dim, eps)
        self.attention_norm = CastFirstRMSNorm(dim, eps)
        self.attention_layer_scale = LayerScale(dim)
        self.ffn_layer_scale = LayerScale(dim)

    def forward(self, x: torch.Tensor, table: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        h = x + self.attention_layer_scale(self.attention(self.attention_norm(x), table, mask))  # (B, T, C)
        return h + self.ffn_layer_scale(self.feed_forward(self.ffn_norm(h)))  # (B, T, C)


class WindowLimitedTransformer(nn.Module):
    """Causal transformer over channels-first input whose queries see the last ``window`` positions.

    Holds the bf16 RoPE table ``freqs_cis`` (block_size, Dh/2, 2) as a persistent buffer. The
    checkpoint's ``causal_mask`` (block_size, block_size) is accepted on load and dropped: the
    window mask is built per call, so no block_size^2 mask is ever kept.
    """

    def __init__(
        self, dim: int, *, num_layers: int, num_heads: int, ffn: int, window: int, block_size: int, eps: float
    ) -> None:
        super().__init__()
        self.window, self.block_size, self.head_dim = window, block_size, dim // num_heads
        self.layers = nn.ModuleList(TransformerBlock(dim, num_heads, ffn, eps) for _ in range(num_layers))
        self.norm = CastFirstRMSNorm(dim, eps)
        self.register_buffer("freqs_cis", rope_table(block_size, self.head_dim))
        self._register_load_state_dict_pre_hook(self._drop_causal_mask)

    def _drop_causal_mask(self, state: dict, prefix: str, *_: object) -> None:
        mask = state.pop(prefix + "causal_mask", None)
        expected = (self.block_size, self.block_size)
        if mask is not None and tuple(mask.shape) != expected:
            raise CheckpointMismatch(
                f"mis-shaped tensor {prefix}causal_mask: checkpoint {tuple(mask.shape)}, model {expected}"
            )

    def reset_rope_table(self, device: torch.device | str) -> None:
        """Recompute ``freqs_cis`` exactly (spec §5.2) on ``device``, for checkpoints without it."""
        self.freqs_cis = rope_table(self.block_size, self.head_dim).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T) -> (B, C, T); T must not exceed block_size."""
        length = x.shape[-1]
        if length > self.block_size:
            raise InvalidInput(
                f"{length} frames exceed the transformer's {self.block_size} positions; process in chunks"
            )
        table = self.freqs_cis[:length]  # (T, Dh/2, 2)
        mask = window_mask(length, self.window, device=x.device)  # (T, T)
        h = x.transpose(1, 2)  # (B, T, C)
        for layer in self.layers:
            h = layer(h, table, mask)  # (B, T, C)
        return self.norm(h).transpose(1, 2)  # (B, C, T)
