"""Shared neural-network primitives of EchoDiT (and, below, of the S1-DAC autoencoder).

Numerics follow spec §3.2/§3.5/§3.6 exactly: statistics, RoPE rotation and AdaLN
modulation run in float32, everything else in the weights' dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ROPE_BASE = 10_000.0  # RoPE theta of every rotary table in the model


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) over the last axis, computed and returned in float32."""
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    """EchoDiT RMSNorm: normalise in float32, multiply the weight in float32, cast back.

    ``shape`` is ``(d,)`` for hidden states or ``(heads, head_dim)`` for per-head Q/K norms
    (input then viewed as ``(B, S, heads, head_dim)``, normalised over head_dim only).
    """

    def __init__(self, shape: int | tuple[int, ...], eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (rms_normalize(x, self.eps) * self.weight).to(x.dtype)


class SwiGLU(nn.Module):
    """out = w2(silu(w1 x) * w3 x), bias-free (names as in the checkpoints)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def rope_frequencies(num_positions: int, head_dim: int) -> torch.Tensor:
    """Complex64 rotary table (num_positions, head_dim/2), built on the CPU in float32.

    Exact construction of spec §3.2: exponent 2i/D in float32, base**exponent and its
    reciprocal in float32, one float32 product pos*f_i, cos/sin of that angle.
    """
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float32)[: head_dim // 2] / head_dim
    inv_freq = 1.0 / (ROPE_BASE**exponent)
    positions = torch.arange(num_positions, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)  # (P, D/2)
    return torch.polar(torch.ones_like(angles), angles)  # complex64 (P, D/2)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (2i, 2i+1) of x (B, S, H, D) by freqs (S, D/2) complex.

    The input is upcast to float32, rotated as a complex64 multiply and cast back.
    """
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, S, H, D/2)
    rotated = pairs * freqs.to(x.device)[None, :, None, :]  # (B, S, H, D/2)
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)  # (B, S, H, D)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [cos(t*w), sin(t*w)] (B, dim) in float32 (spec §3.5).

    w_k = 1000 * exp(-ln(10000) * k / half). ``t`` arrives in the model dtype; the product
    with the float32 frequencies promotes to float32.
    """
    half = dim // 2
    freqs = 1000.0 * torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None] * freqs[None, :]  # (B, half) float32
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


class LowRankAdaLN(nn.Module):
    """Shift/scale/gate modulation from the shared condition plus a low-rank residual (spec §3.6)."""

    def __init__(self, dim: int, rank: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.shift_down = nn.Linear(dim, rank, bias=False)
        self.shift_up = nn.Linear(rank, dim, bias=True)
        self.scale_down = nn.Linear(dim, rank, bias=False)
        self.scale_up = nn.Linear(rank, dim, bias=True)
        self.gate_down = nn.Linear(dim, rank, bias=False)
        self.gate_up = nn.Linear(rank, dim, bias=True)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, S, D); cond: (B, 1, 3D) -> (modulated x (B, S, D), tanh gate (B, 1, D))."""
        shift, scale, gate = cond.chunk(3, dim=-1)  # (B, 1, D) each
        shift = self.shift_up(self.shift_down(F.silu(shift))) + shift
        scale = self.scale_up(self.scale_down(F.silu(scale))) + scale
        gate = self.gate_up(self.gate_down(F.silu(gate))) + gate
        h = rms_normalize(x, self.eps) * (1 + scale) + shift  # float32: (1 + scale) formed in model dtype
        return h.to(x.dtype), torch.tanh(gate)
