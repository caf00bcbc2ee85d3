"""EchoDiT: the Echo-TTS diffusion transformer and its conditioning encoders (spec §3).

Pure modules, no I/O. Parameter names reproduce the published checkpoint keys exactly
(``shared/reference/echo_tts_state_dict_keys.json``). Shapes in comments use
B batch, S current latents, L text tokens, T speaker/latent frames, P = T/4 patches,
H heads, Dh head dim, D model width, E encoder width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import EchoDiTConfig
from .errors import InvalidInput
from .layers import LowRankAdaLN, RMSNorm, SwiGLU, apply_rope, rope_frequencies, timestep_embedding

PATCH_INPUT_SCALE = 6.0  # speaker/latent encoders divide the in_proj output by this (upstream constant)
LATENT_PREFIX_STRIDE = 4  # RoPE position of latent-prefix patch j is 4*j (its first frame index)

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # one (K, V) per DiT layer, each (B, N, H, Dh)


def apply_rope_half_heads(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """RoPE on heads 0..H/2-1 of x (B, N, H, Dh); heads H/2..H-1 pass through unchanged."""
    half = x.shape[2] // 2
    rotated = apply_rope(x[:, :, :half], freqs)  # (B, N, H/2, Dh)
    return torch.cat([rotated, x[:, :, half:]], dim=2)  # (B, N, H, Dh)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **sdpa: object) -> torch.Tensor:
    """SDPA over (B, N, H, Dh) inputs; returns heads flattened back to (B, Nq, H*Dh)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), **sdpa)  # (B,H,Nq,Dh)
    return out.transpose(1, 2).flatten(2)  # (B, Nq, H*Dh)


class EncoderAttention(nn.Module):
    """Gated self-attention of the text/speaker/latent encoders: QK-norm, RoPE on all heads."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.gate = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm((num_heads, self.head_dim), eps)
        self.k_norm = RMSNorm((num_heads, self.head_dim), eps)

    def forward(
        self, h: torch.Tensor, freqs: torch.Tensor, *, mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """h: (B, N, E); freqs: (N, Dh/2) complex; mask: (B, 1, 1, N) bool or None -> (B, N, E)."""
        B, N, _ = h.shape
        heads = (B, N, self.num_heads, self.head_dim)
        q = self.q_norm(self.wq(h).view(heads))  # (B, N, H, Dh)
        k = self.k_norm(self.wk(h).view(heads))  # (B, N, H, Dh)
        v = self.wv(h).view(heads)  # (B, N, H, Dh)
        gate = self.gate(h)  # (B, N, E)
        q, k = apply_rope(q, freqs), apply_rope(k, freqs)  # (B, N, H, Dh) each
        out = _attend(q, k, v, attn_mask=mask, is_causal=causal)  # (B, N, E)
        return self.wo(out * torch.sigmoid(gate))  # (B, N, E)


class TransformerEncoderBlock(nn.Module):
    """Pre-norm transformer block of the encoders: x += attn(norm x); x += mlp(norm x)."""

    def __init__(self, dim: int, num_heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(dim, eps)
        self.attention = EncoderAttention(dim, num_heads, eps)
        self.mlp_norm = RMSNorm(dim, eps)
        self.mlp = SwiGLU(dim, hidden)

    def forward(
        self, x: torch.Tensor, freqs: torch.Tensor, *, mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """x: (B, N, E) -> (B, N, E)."""
        x = x + self.attention(self.attention_norm(x), freqs, mask=mask, causal=causal)  # (B, N, E)
        return x + self.mlp(self.mlp_norm(x))  # (B, N, E)


class TextEncoder(nn.Module):
    """Byte embedding + bidirectional encoder blocks with a key-padding mask (spec §3.3)."""

    def __init__(self, config: EchoDiTConfig) -> None:
        super().__init__()
        c = config
        self.head_dim = c.text_head_dim
        self.text_embedding = nn.Embedding(c.text_vocab_size, c.text_model_size)
        self.blocks = nn.ModuleList(
            TransformerEncoderBlock(c.text_model_size, c.text_num_heads, c.text_intermediate_size, c.norm_eps)
            for _ in range(c.text_num_layers)
        )

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """input_ids: (B, L) int; mask: (B, L) bool, True = real token -> (B, L, E)."""
        x = self.text_embedding(input_ids)  # (B, L, E)
        freqs = rope_frequencies(input_ids.shape[1], self.head_dim).to(x.device)  # (L, Dh/2) built on CPU
        key_mask = mask.to(device=x.device, dtype=torch.bool)[:, None, None, :]  # (B, 1, 1, L)
        for block in self.blocks:
            x = block(x, freqs, mask=key_mask)  # (B, L, E)
        return x


class SpeakerEncoder(nn.Module):
    """Patches of 4 latent frames -> in_proj / 6 -> causal encoder blocks (spec §3.4).

    Also the architecture of the blockwise latent encoder (separate weights).
    """

    def __init__(self, config: EchoDiTConfig) -> None:
        super().__init__()
        c = config
        self.patch_size = c.speaker_patch_size
        self.head_dim = c.speaker_head_dim
        self.in_proj = nn.Linear(c.latent_size * c.speaker_patch_size, c.speaker_model_size, bias=True)
        self.blocks = nn.ModuleList(
            TransformerEncoderBlock(c.speaker_model_size, c.speaker_num_heads, c.speaker_intermediate_size, c.norm_eps)
            for _ in range(c.speaker_num_layers)
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """latents: (B, T, latent) in the model dtype, T divisible by the patch size -> (B, T/4, E)."""
        B, T, C = latents.shape
        if T % self.patch_size:
            raise InvalidInput(f"latent length {T} is not a multiple of the patch size {self.patch_size}")
        patches = latents.reshape(B, T // self.patch_size, self.patch_size * C)  # (B, P, 4*latent) frame-major
        x = self.in_proj(patches) / PATCH_INPUT_SCALE  # (B, P, E)
        freqs = rope_frequencies(T // self.patch_size, self.head_dim).to(x.device)  # (P, Dh/2) built on CPU
        for block in self.blocks:
            x = block(x, freqs, causal=True)  # (B, P, E)
        return x


class JointAttention(nn.Module):
    """One attention over keys [self | latent prefix | text | speaker], queries from the latents (spec §3.7)."""

    def __init__(self, config: EchoDiTConfig, *, blockwise: bool) -> None:
        super().__init__()
        c = config
        dim, heads = c.model_size, c.num_heads
        self.num_heads = heads
        self.head_dim = c.head_dim
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wk_text = nn.Linear(c.text_model_size, dim, bias=False)
        self.wv_text = nn.Linear(c.text_model_size, dim, bias=False)
        self.wk_speaker = nn.Linear(c.speaker_model_size, dim, bias=False)
        self.wv_speaker = nn.Linear(c.speaker_model_size, dim, bias=False)
        if blockwise:
            self.wk_latent = nn.Linear(c.speaker_model_size, dim, bias=False)
            self.wv_latent = nn.Linear(c.speaker_model_size, dim, bias=False)
        self.q_norm = RMSNorm((heads, c.head_dim), c.norm_eps)
        self.k_norm = RMSNorm((heads, c.head_dim), c.norm_eps)  # shared by self/latent/text/speaker keys
        self.gate = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:2], self.num_heads, self.head_dim)  # (B, N, H, Dh)

    def text_kv(self, text_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """text_state: (B, L, E) normed -> K, V (B, L, H, Dh); K k-normed, no RoPE."""
        return self.k_norm(self._heads(self.wk_text(text_state))), self._heads(self.wv_text(text_state))

    def speaker_kv(self, speaker_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """speaker_state: (B, P, E) normed -> K, V (B, P, H, Dh); K k-normed, no RoPE."""
        return self.k_norm(self._heads(self.wk_speaker(speaker_state))), self._heads(self.wv_speaker(speaker_state))

    def latent_kv(self, latent_state: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latent_state: (B, P, E) normed; freqs: (P, Dh/2) at positions 4j -> K (k-normed, half-head RoPE), V."""
        k = apply_rope_half_heads(self.k_norm(self._heads(self.wk_latent(latent_state))), freqs)  # (B, P, H, Dh)
        return k, self._heads(self.wv_latent(latent_state))  # (B, P, H, Dh) each

    def forward(
        self,
        h: torch.Tensor,
        freqs: torch.Tensor,
        context: list[tuple[torch.Tensor, torch.Tensor]],
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """h: (B, S, D); freqs: (S, Dh/2) rows start_pos..; context: [(K, V)] of latent, text, speaker
        groups in that order, each (B, N_g, H, Dh); mask: (B, 1, 1, S + sum N_g) bool -> (B, S, D)."""
        q = apply_rope_half_heads(self.q_norm(self._heads(self.wq(h))), freqs)  # (B, S, H, Dh)
        k = apply_rope_half_heads(self.k_norm(self._heads(self.wk(h))), freqs)  # (B, S, H, Dh)
        v = self._heads(self.wv(h))  # (B, S, H, Dh)
        gate = self.gate(h)  # (B, S, D)
        keys = torch.cat([k, *(ck.to(k.dtype) for ck, _ in context)], dim=1)  # (B, S+N, H, Dh)
        values = torch.cat([v, *(cv.to(v.dtype) for _, cv in context)], dim=1)  # (B, S+N, H, Dh)
        out = _attend(q, keys, values, attn_mask=mask)  # (B, S, D)
        return self.wo(out * torch.sigmoid(gate))  # (B, S, D)


class DiTBlock(nn.Module):
    """x += tanh-gate * JointAttention(AdaLN x); x += tanh-gate * MLP(AdaLN x) (spec §3.6)."""

    def __init__(self, config: EchoDiTConfig, *, blockwise: bool) -> None:
        super().__init__()
        c = config
        self.attention_adaln = LowRankAdaLN(c.model_size, c.adaln_rank, c.norm_eps)
        self.attention = JointAttention(c, blockwise=blockwise)
        self.mlp_adaln = LowRankAdaLN(c.model_size, c.adaln_rank, c.norm_eps)
        self.mlp = SwiGLU(c.model_size, c.intermediate_size)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        freqs: torch.Tensor,
        context: list[tuple[torch.Tensor, torch.Tensor]],
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """x: (B, S, D); cond: (B, 1, 3D) -> (B, S, D)."""
        h, gate = self.attention_adaln(x, cond)  # (B, S, D), (B, 1, D)
        x = x + gate * self.attention(h, freqs, context, mask)  # (B, S, D)
        h, gate = self.mlp_adaln(x, cond)  # (B, S, D), (B, 1, D)
        return x + gate * self.mlp(h)  # (B, S, D)


class EchoDiT(nn.Module):
    """The Echo-TTS flow-matching DiT (spec §3). ``blockwise=False`` omits the latent-prefix weights.

    Conditioning is encoded once per request with the ``get_kv_cache_*`` methods; ``forward``
    predicts the flow velocity of the current latents given those caches.
    """

    def __init__(self, config: EchoDiTConfig, *, blockwise: bool = True) -> None:
        super().__init__()
        c = config
        self.config = config
        self.blockwise = blockwise
        self.text_encoder = TextEncoder(c)
        self.text_norm = RMSNorm(c.text_model_size, c.norm_eps)
        self.speaker_encoder = SpeakerEncoder(c)
        self.speaker_norm = RMSNorm(c.speaker_model_size, c.norm_eps)
        if blockwise:
            self.latent_encoder = SpeakerEncoder(c)
            self.latent_norm = RMSNorm(c.speaker_model_size, c.norm_eps)
        self.cond_module = nn.Sequential(
            nn.Linear(c.timestep_embed_size, c.model_size, bias=False),
            nn.SiLU(),
            nn.Linear(c.model_size, c.model_size, bias=False),
            nn.SiLU(),
            nn.Linear(c.model_size, 3 * c.model_size, bias=False),
        )
        self.in_proj = nn.Linear(c.latent_size, c.model_size, bias=True)
        self.blocks = nn.ModuleList(DiTBlock(c, blockwise=blockwise) for _ in range(c.num_layers))
        self.out_norm = RMSNorm(c.model_size, c.norm_eps)
        self.out_proj = nn.Linear(c.model_size, c.latent_size, bias=True)
        self._rope_memo: torch.Tensor | None = None  # device copy of the DiT RoPE table (not state)

    def rope_rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop-1 of the DiT RoPE table (stop - start, Dh/2) complex64, on the model device.

        Each row depends only on its position, so one table built on the CPU exactly as
        :func:`rope_frequencies` does (and as upstream does at every call) and kept on the device
        gives the same values without a host-to-device copy per call — which also lets a CUDA
        graph capture the forward.
        """
        memo = self._rope_memo
        if memo is None or memo.shape[0] < stop or memo.device != self.device:
            memo = rope_frequencies(max(stop, 1024), self.config.head_dim).to(self.device)  # built on CPU
            self._rope_memo = memo
        return memo[start:stop]

    @property
    def dtype(self) -> torch.dtype:
        return self.in_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.in_proj.weight.device

    def get_kv_cache_text(self, input_ids: torch.Tensor, mask: torch.Tensor) -> KVCache:
        """input_ids: (B, L) int; mask: (B, L) bool -> per layer K, V (B, L, H, Dh), K k-normed."""
        state = self.text_norm(self.text_encoder(input_ids.to(self.device), mask))  # (B, L, E)
        return [block.attention.text_kv(state) for block in self.blocks]

    def get_kv_cache_speaker(self, latents: torch.Tensor) -> KVCache:
        """latents: (B, T, 80), T % 4 == 0 -> per layer K, V (B, T/4, H, Dh), K k-normed."""
        state = self.speaker_norm(self.speaker_encoder(latents.to(self.device, self.dtype)))  # (B, P, E)
        return [block.attention.speaker_kv(state) for block in self.blocks]

    def get_kv_cache_latent(self, latents: torch.Tensor) -> KVCache:
        """latents: (B, T, 80) clean prefix buffer -> per layer K, V (B, T/4, H, Dh).

        K is k-normed and rotated on the first half of the heads at positions 0, 4, 8, ...
        """
        if not self.blockwise:
            raise InvalidInput("this EchoDiT was built without the blockwise latent encoder (drop_blockwise=True)")
        state = self.latent_norm(self.latent_encoder(latents.to(self.device, self.dtype)))  # (B, P, E)
        num_patches = state.shape[1]
        freqs = rope_frequencies(LATENT_PREFIX_STRIDE * num_patches, self.config.head_dim)  # (4P, Dh/2) on CPU
        freqs = freqs[::LATENT_PREFIX_STRIDE].to(self.device)  # (P, Dh/2): positions 4j
        return [block.attention.latent_kv(state, freqs) for block in self.blocks]

    def _check_caches(self, *caches: KVCache | None) -> None:
        for cache in caches:
            if cache is not None and len(cache) != len(self.blocks):
                raise InvalidInput(f"a K/V cache has {len(cache)} layers, the model has {len(self.blocks)}")

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        text_kv: KVCache,
        text_mask: torch.Tensor,
        speaker_kv: KVCache,
        speaker_mask: torch.Tensor,
        latent_kv: KVCache | None = None,
        start_pos: int = 0,
    ) -> torch.Tensor:
        """Velocity of x.

        x: (B, S, 80) noisy latents; t: (B,) in [0, 1]; text_mask: (B, L) bool; speaker_mask: (B, T)
        bool per latent frame (subsampled to patches here); latent_kv: blockwise prefix caches with
        (B, P_lat, H, Dh) tensors, patch j visible iff 4j < start_pos; start_pos: RoPE offset of x.
        Returns (B, S, 80) float32.
        """
        self._check_caches(text_kv, speaker_kv, latent_kv)
        B, S, _ = x.shape
        device = self.device
        x = x.to(device, self.dtype)  # (B, S, 80)
        t = t.to(device, self.dtype)  # (B,) rounded to the model dtype before embedding
        emb = timestep_embedding(t, self.config.timestep_embed_size).to(self.dtype)  # (B, 512)
        cond = self.cond_module(emb)[:, None, :]  # (B, 1, 3D)
        freqs = self.rope_rows(start_pos, start_pos + S)  # (S, Dh/2)

        num_latent = latent_kv[0][0].shape[1] if latent_kv else 0
        latent_mask = (torch.arange(num_latent, device=device) * LATENT_PREFIX_STRIDE < start_pos).expand(B, -1)
        patch_mask = speaker_mask[:, :: self.config.speaker_patch_size]  # (B, T/4)
        mask = torch.cat(
            [
                torch.ones(B, S, dtype=torch.bool, device=device),  # self keys always visible
                latent_mask,  # (B, P_lat)
                text_mask.to(device=device, dtype=torch.bool),  # (B, L)
                patch_mask.to(device=device, dtype=torch.bool),  # (B, T/4)
            ],
            dim=1,
        )[:, None, None, :]  # (B, 1, 1, S + P_lat + L + T/4)

        h = self.in_proj(x)  # (B, S, D)
        for i, block in enumerate(self.blocks):
            context = ([latent_kv[i]] if num_latent else []) + [text_kv[i], speaker_kv[i]]
            h = block(h, cond, freqs, context, mask)  # (B, S, D)
        return self.out_proj(self.out_norm(h)).float()  # (B, S, 80)
