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


# =========================================================================================
# Fish S1-DAC autoencoder primitives (spec §5.2, §5.3)
#
# Weight-normalised layers keep g and v as parameters, named as in the published checkpoint,
# and form W = g * v / ||v|| (norm over every axis but 0) at each call. A load_state_dict
# pre-hook accepts the other naming style, so both ``weight_g``/``weight_v`` and
# ``parametrizations.weight.original0``/``original1`` load into every WN layer.
# =========================================================================================

SNAKE_EPS = 1e-9  # Snake: 1 / (alpha + eps)
_PARAMETRIZED = ("parametrizations.weight.original0", "parametrizations.weight.original1")
_LEGACY = ("weight_g", "weight_v")


def _rename_keys(state: dict, prefix: str, sources: tuple[str, str], targets: tuple[str, str]) -> None:
    for source, target in zip(sources, targets, strict=True):
        if prefix + source in state and prefix + target not in state:
            state[prefix + target] = state.pop(prefix + source)


def weight_norm_weight(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """W = g * v / ||v||, the norm taken over every axis but 0 (PyTorch weight norm, dim 0)."""
    return torch._weight_norm(v, g, 0)


class WeightNormPair(nn.Module):
    """The (g, v) pair of a weight-normalised tensor, named like torch's parametrization."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        v = torch.empty(shape)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))  # nn.Conv1d's default init
        self.original1 = nn.Parameter(v)
        self.original0 = nn.Parameter(torch.linalg.vector_norm(v.flatten(1), dim=1).reshape(-1, *[1] * (v.dim() - 1)))

    def forward(self) -> torch.Tensor:
        return weight_norm_weight(self.original0, self.original1)


class _WNConvBase(nn.Module):
    """Weight-normalised conv: ``parametrizations.weight.original0/1`` (g, v) and ``bias``."""

    def __init__(self, weight_shape: tuple[int, ...], out_channels: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.stride, self.dilation = stride, dilation
        self.parametrizations = nn.ModuleDict({"weight": WeightNormPair(weight_shape)})
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self._register_load_state_dict_pre_hook(self._accept_legacy_names)

    @staticmethod
    def _accept_legacy_names(state: dict, prefix: str, *_: object) -> None:
        _rename_keys(state, prefix, _LEGACY, _PARAMETRIZED)

    @property
    def weight(self) -> torch.Tensor:
        return self.parametrizations["weight"]()


class WNConv1d(_WNConvBase):
    """Weight-normalised Conv1d without padding; weight (C_out, C_in/groups, k), g (C_out, 1, 1)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, stride: int = 1, dilation: int = 1) -> None:
        super().__init__((c_out, c_in, kernel), c_out, stride, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)


class WNConvTranspose1d(_WNConvBase):
    """Weight-normalised ConvTranspose1d; weight (C_in, C_out, k), so g is (C_in, 1, 1) (spec §5.3)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, stride: int = 1) -> None:
        super().__init__((c_in, c_out, kernel), c_out, stride, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.weight, self.bias, stride=self.stride)


class LegacyWNConv1d(nn.Module):
    """Weight-normalised Conv1d named the legacy way: ``weight_g``, ``weight_v``, ``bias``."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1) -> None:
        super().__init__()
        pair = WeightNormPair((c_out, c_in, kernel))
        self.weight_g, self.weight_v = pair.original0, pair.original1
        self.bias = nn.Parameter(torch.zeros(c_out))
        self._register_load_state_dict_pre_hook(self._accept_parametrized_names)

    @staticmethod
    def _accept_parametrized_names(state: dict, prefix: str, *_: object) -> None:
        _rename_keys(state, prefix, _PARAMETRIZED, _LEGACY)

    @property
    def weight(self) -> torch.Tensor:
        return weight_norm_weight(self.weight_g, self.weight_v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias)


class CausalConv1d(nn.Module):
    """Causal conv (spec §5.3): left-pad k_eff - s, right-pad to whole strides; ``.conv`` holds weights.

    Length is preserved for stride 1 and becomes ceil(L / s) otherwise.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        if weight_norm:
            if groups != 1:
                raise ValueError("weight-normalised causal convs are not grouped")
            self.conv: nn.Module = WNConv1d(c_in, c_out, kernel, stride=stride, dilation=dilation)
        else:
            self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, dilation=dilation, groups=groups)
        self.stride = stride
        self.effective_kernel = (kernel - 1) * dilation + 1
        self.left_pad = self.effective_kernel - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, L) -> (B, C_out, ceil(L / stride))."""
        length = x.shape[-1] + self.left_pad
        right_pad = -(length - self.effective_kernel) % self.stride
        return self.conv(F.pad(x, (self.left_pad, right_pad)))


def causal_conv_transpose1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int
) -> torch.Tensor:
    """Transposed conv, then drop the last k - s samples: x (B, C_in, L) -> (B, C_out, L * s).

    weight is (C_in, C_out, k). For k = s and k = 2s (every S1-DAC case) this is one or two
    matmuls (output block q = x_q W[:s] + x_{q-1} W[s:]), which avoids a pathologically slow
    CPU kernel for few channels; other kernels use ``F.conv_transpose1d``.
    """
    c_in, c_out, kernel = weight.shape
    if kernel not in (stride, 2 * stride):
        y = F.conv_transpose1d(x, weight, bias, stride=stride)  # (B, C_out, (L - 1) s + k)
        return y[..., : y.shape[-1] - (kernel - stride)]
    rows = x.transpose(1, 2)  # (B, L, C_in)
    blocks = rows @ weight[:, :, :stride].reshape(c_in, c_out * stride)  # (B, L, C_out * s)
    if kernel == 2 * stride:
        tail = rows[:, :-1] @ weight[:, :, stride:].reshape(c_in, c_out * stride)  # (B, L - 1, C_out * s)
        blocks = torch.cat([blocks[:, :1], blocks[:, 1:] + tail], dim=1)  # (B, L, C_out * s)
    y = blocks.reshape(x.shape[0], -1, c_out, stride).permute(0, 2, 1, 3).flatten(2)  # (B, C_out, L * s)
    return y if bias is None else y + bias[:, None]


class CausalConvTranspose1d(nn.Module):
    """Causal transposed conv: valid transposed conv, then drop the last k - s samples -> L * s."""

    def __init__(self, c_in: int, c_out: int, kernel: int, *, stride: int, weight_norm: bool = True) -> None:
        super().__init__()
        if weight_norm:
            self.conv: nn.Module = WNConvTranspose1d(c_in, c_out, kernel, stride=stride)
        else:
            self.conv = nn.ConvTranspose1d(c_in, c_out, kernel, stride=stride)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, L) -> (B, C_out, L * stride)."""
        return causal_conv_transpose1d(x, self.conv.weight, self.conv.bias, self.stride)


class Snake(nn.Module):
    """y = x + sin^2(alpha x) / (alpha + 1e-9), alpha per channel stored as (1, C, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.alpha + SNAKE_EPS).reciprocal() * torch.sin(self.alpha * x).pow(2)


class CastFirstRMSNorm(nn.Module):
    """S1-DAC RMSNorm: normalise in float32, cast back to the input dtype, then multiply the weight.

    Differs from :class:`RMSNorm` (weight multiplied in float32) only in low precision.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_normalize(x, self.eps).to(x.dtype) * self.weight


def rope_table(num_positions: int, head_dim: int) -> torch.Tensor:
    """S1-DAC rotary table (num_positions, head_dim/2, 2) = (cos, sin), rounded to bfloat16.

    Same float32 construction as :func:`rope_frequencies`; the published checkpoint stores
    exactly such bf16 tables (``freqs_cis``), used even when the autoencoder runs in float32.
    """
    return torch.view_as_real(rope_frequencies(num_positions, head_dim)).to(torch.bfloat16)


def apply_rope_table(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of x (B, T, H, D) by table (T, D/2, 2) in float32; cast back to x's dtype."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, T, H, D/2, 2)
    cos = table[None, :, None, :, 0]  # (1, T, 1, D/2), promoted to float32 below
    sin = table[None, :, None, :, 1]
    a, b = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1)  # (B, T, H, D/2, 2)
    return rotated.flatten(3).to(x.dtype)  # (B, T, H, D)
