"""Euler flow-matching sampler with independent text/speaker CFG (spec §6) and blockwise
continuation (spec §7).

Named steps: :func:`encode_conditioning` -> :func:`cfg_conditioning` (the 3-way CFG batch) ->
:func:`guided_velocity` -> :func:`rescale_velocity` -> :func:`euler_step`, driven by
:func:`sample` / :func:`sample_blockwise`. The sampler state ``x`` is float32 throughout; it is
cast to the model dtype for each forward call, and ``t`` goes in as a ``(rows,)`` tensor of the
model dtype. Every float comparison against the schedule is a float32 comparison, as upstream.
Nothing here mutates the caller's :class:`Conditioning`: force-speaker scales private copies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .config import FLATTEN_WINDOW, LATENT_DIM, SPEAKER_PATCH_SIZE, SamplerConfig
from .errors import Cancelled, InvalidInput, InvalidSamplerConfig
from .graphs import Forward, make_forward
from .model import KVCache
from .text import TextBatch

ProgressCallback = Callable[[int, int], None]  # progress(step, total), after every diffusion step
ShouldCancel = Callable[[], bool]  # asked before every step: True raises Cancelled
Seeds = int | Sequence[int]

INIT_SCALE = 0.999  # upstream scales the schedule so that rescaling can apply at the first step

# spec §6.7: the end-of-speech heuristic on generated latents; FLATTEN_WINDOW (20 frames per
# window, as many zero frames appended before the scan) lives in config, torch-free
FLATTEN_STD = 0.05  # window std (unbiased) must be below this ...
FLATTEN_MEAN = 0.1  # ... and |window mean| below this


@dataclass(frozen=True)
class Conditioning:
    """Per-request caches: per-layer text and speaker K/V plus their masks.

    ``text_kv``/``speaker_kv``: lists of (K, V), each (B, N, H, Dh) in the model dtype;
    ``text_mask`` (B, L) bool; ``speaker_mask`` (B, T) bool per latent frame.
    """

    text_kv: KVCache
    text_mask: torch.Tensor
    speaker_kv: KVCache
    speaker_mask: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.text_mask.shape[0]


@torch.inference_mode()
def encode_conditioning(
    model, text: TextBatch, speaker_latents: torch.Tensor, speaker_mask: torch.Tensor
) -> Conditioning:
    """Run the text and speaker encoders once. speaker_latents: (B, T, 80), T % 4 == 0;
    speaker_mask: (B, T) bool (all False = no reference). Tensors move to the model device."""
    if speaker_latents.ndim != 3 or speaker_latents.shape[-1] != LATENT_DIM:
        raise InvalidInput(f"speaker latents must be (B, T, {LATENT_DIM}), got {tuple(speaker_latents.shape)}")
    if speaker_latents.shape[1] % SPEAKER_PATCH_SIZE:
        raise InvalidInput(f"speaker latent length {speaker_latents.shape[1]} is not a multiple of 4")
    if speaker_mask.shape != speaker_latents.shape[:2]:
        raise InvalidInput(f"speaker mask {tuple(speaker_mask.shape)} does not match latents (B, T)")
    if speaker_latents.shape[0] != len(text):
        raise InvalidInput(f"{len(text)} texts but {speaker_latents.shape[0]} speaker rows")
    device, dtype = model.device, model.dtype
    ids, text_mask = text.input_ids.to(device), text.mask.to(device)
    return Conditioning(
        text_kv=model.get_kv_cache_text(ids, text_mask),
        text_mask=text_mask,
        speaker_kv=model.get_kv_cache_speaker(speaker_latents.to(device=device, dtype=dtype)),
        speaker_mask=speaker_mask.to(device=device, dtype=torch.bool),
    )


def _repeat3(cache: KVCache) -> KVCache:
    return [(torch.cat([k, k, k], dim=0), torch.cat([v, v, v], dim=0)) for k, v in cache]


def cfg_conditioning(cond: Conditioning) -> Conditioning:
    """The 3B-row CFG batch [conditional | text dropped | speaker dropped], grouped by branch.

    All branches share the K/V (concatenated three times); only the masks differ:
    text [m_text, 0, m_text], speaker [m_spk, m_spk, 0].
    """
    no_text, no_speaker = torch.zeros_like(cond.text_mask), torch.zeros_like(cond.speaker_mask)
    return Conditioning(
        text_kv=_repeat3(cond.text_kv),
        text_mask=torch.cat([cond.text_mask, no_text, cond.text_mask], dim=0),  # (3B, L)
        speaker_kv=_repeat3(cond.speaker_kv),
        speaker_mask=torch.cat([cond.speaker_mask, cond.speaker_mask, no_speaker], dim=0),  # (3B, T)
    )


def scale_speaker_kv_(speaker_kv: KVCache, factor: float, max_layers: int | None) -> int:
    """Multiply speaker K and V of layers 0..min(max_layers, layers)-1 in place by ``factor``.
    Returns how many layers were scaled."""
    layers = len(speaker_kv) if max_layers is None else min(max_layers, len(speaker_kv))
    for k, v in speaker_kv[:layers]:
        k.mul_(factor)
        v.mul_(factor)
    return layers


def timestep_schedule(num_steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """t_i = linspace(1, 0, N+1) * 0.999 in float32: (N+1,), from 0.999 down to exactly 0."""
    return torch.linspace(1.0, 0.0, num_steps + 1, device=device) * INIT_SCALE


def cfg_active(t: torch.Tensor, config: SamplerConfig) -> bool:
    """CFG applies iff cfg_min_t <= t <= cfg_max_t, compared in float32 (t is a float32 scalar)."""
    return bool((t >= config.cfg_min_t) & (t <= config.cfg_max_t))


def guided_velocity(
    v_cond: torch.Tensor, v_no_text: torch.Tensor, v_no_speaker: torch.Tensor, config: SamplerConfig
) -> torch.Tensor:
    """v = v_c + s_text (v_c - v_no_text) + s_spk (v_c - v_no_speaker), float32 (B, S, 80)."""
    return v_cond + config.cfg_scale_text * (v_cond - v_no_text) + config.cfg_scale_speaker * (v_cond - v_no_speaker)


def rescale_velocity(v: torch.Tensor, x: torch.Tensor, t: torch.Tensor, k: float, sigma: float) -> torch.Tensor:
    """Temporal score rescaling (spec §6.4) in upstream's exact float32 form, for t < 1.

    snr = (1-t)^2/t^2; rho = (snr sigma^2 + 1)/(snr sigma^2/k + 1); v <- (rho ((1-t) v + x) - x)/(1-t).
    ``t`` is a float32 0-dim tensor; the order of operations matters at t = 0.999 (cancellation).
    Upstream skips the rescale at t >= 1, which the 0.999-scaled schedule never reaches.
    """
    snr = (1 - t) ** 2 / (t**2)
    ratio = (snr * sigma**2 + 1) / (snr * sigma**2 / k + 1)
    return 1 / (1 - t) * (ratio * ((1 - t) * v + x) - x)


def euler_step(x: torch.Tensor, v: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """x + v (t_next - t), float32 (the step is negative: t runs from noise to data)."""
    return x + v * (t_next - t)


class _Noise:
    """Initial noise: per item from its own generator, or (one int seed) one shared generator
    drawing the whole batch at once exactly as upstream's ``rng_seed`` does."""

    def __init__(self, seeds: Seeds, batch_size: int, device: torch.device, truncation: float | None) -> None:
        shared = isinstance(seeds, int)
        seed_list = [seeds] if shared else list(seeds)
        if not shared and len(seed_list) != batch_size:
            raise InvalidInput(f"{len(seed_list)} seeds for a batch of {batch_size}: give one seed per item")
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seed_list]
        self.shared, self.batch_size, self.device, self.truncation = shared, batch_size, device, truncation

    def draw(self, length: int) -> torch.Tensor:
        rows = self.batch_size if self.shared else 1
        parts = [
            torch.randn((rows, length, LATENT_DIM), device=self.device, dtype=torch.float32, generator=g)
            for g in self.generators
        ]
        noise = torch.cat(parts, dim=0)  # (B, length, 80)
        return noise * self.truncation if self.truncation is not None else noise


class _Caches:
    """The conditional caches, the 3-way CFG caches built from them, optional blockwise latent
    caches, and the force-speaker scaling of the (private copies of the) speaker K/V."""

    def __init__(self, cond: Conditioning, config: SamplerConfig, needs_cfg: bool, forward: Forward) -> None:
        self.config, self.needs_cfg, self.forward = config, needs_cfg, forward
        speaker_kv = list(cond.speaker_kv)
        if config.speaker_kv_scale is not None:
            if config.speaker_kv_max_layers is not None and config.speaker_kv_max_layers < 0:
                raise InvalidSamplerConfig(f"speaker_kv_max_layers must be >= 0, got {config.speaker_kv_max_layers}")
            layers = len(speaker_kv) if config.speaker_kv_max_layers is None else config.speaker_kv_max_layers
            speaker_kv[:layers] = [(k.clone(), v.clone()) for k, v in speaker_kv[:layers]]
        self.cond = Conditioning(cond.text_kv, cond.text_mask, speaker_kv, cond.speaker_mask)
        # with force-speaker on, scale_speaker() builds the CFG caches before the first step
        self.cfg = cfg_conditioning(self.cond) if needs_cfg and config.speaker_kv_scale is None else None
        self.latent_cfg: KVCache | None = None
        self.latent_cond: KVCache | None = None

    def scale_speaker(self, factor: float) -> None:
        layers = scale_speaker_kv_(self.cond.speaker_kv, factor, self.config.speaker_kv_max_layers)
        if not self.needs_cfg:
            return
        if self.cfg is None:
            self.cfg = cfg_conditioning(self.cond)
            return
        # refresh the scaled layers of the 3-way speaker K/V in place (each branch's rows): a
        # captured CUDA graph keeps reading this storage
        for (k3, v3), (k, v) in zip(self.cfg.speaker_kv[:layers], self.cond.speaker_kv[:layers], strict=True):
            for rows_k, rows_v in zip(k3.chunk(3, dim=0), v3.chunk(3, dim=0), strict=True):
                rows_k.copy_(k)
                rows_v.copy_(v)

    def encode_prefix(self, model, buffer: torch.Tensor) -> None:
        """Latent caches of the whole buffer (B, P+sum, 80): 3 stacked copies when CFG is used."""
        batch = buffer.shape[0]
        stacked = torch.cat([buffer, buffer, buffer], dim=0) if self.needs_cfg else buffer
        self.latent_cfg = model.get_kv_cache_latent(stacked.to(model.dtype))
        self.latent_cond = [(k[:batch], v[:batch]) for k, v in self.latent_cfg]


def _velocity(model, x: torch.Tensor, t: torch.Tensor, use_cfg: bool, caches: _Caches, start_pos: int) -> torch.Tensor:
    """One step's guided velocity (B, S, 80) float32: a 3B-row CFG pass or a B-row pass."""
    config, batch = caches.config, x.shape[0]
    cond = caches.cfg if use_cfg else caches.cond
    assert cond is not None, "CFG caches exist whenever a step is in the CFG window"
    x_in = torch.cat([x, x, x], dim=0) if use_cfg else x  # (3B or B, S, 80) float32
    rows = x_in.shape[0]
    v = caches.forward(
        x_in.to(model.dtype),
        (torch.ones((rows,), device=x.device) * t).to(model.dtype),  # (rows,)
        text_kv=cond.text_kv,
        text_mask=cond.text_mask,
        speaker_kv=cond.speaker_kv,
        speaker_mask=cond.speaker_mask,
        latent_kv=caches.latent_cfg if use_cfg else caches.latent_cond,
        start_pos=start_pos,
    ).float()
    if not use_cfg:
        return v
    v_cond, v_no_text, v_no_speaker = v.chunk(3, dim=0)  # (B, S, 80) each
    assert v_cond.shape[0] == batch
    return guided_velocity(v_cond, v_no_text, v_no_speaker, config)


@dataclass
class _Run:
    """Loop bookkeeping shared by all blocks of one call."""

    schedule: torch.Tensor  # (N+1,) float32 on the model device
    schedule_cpu: torch.Tensor  # the same values on the CPU, for the Python-side comparisons
    total: int
    progress: ProgressCallback | None
    should_cancel: ShouldCancel | None
    done: int = 0


def _denoise(model, x: torch.Tensor, caches: _Caches, run: _Run, start_pos: int) -> torch.Tensor:
    """The N-step Euler loop of spec §6.1 on one block of noise x (B, S, 80) float32."""
    config = caches.config
    tau = config.speaker_kv_min_t
    for i in range(config.num_steps):
        if run.should_cancel is not None and run.should_cancel():
            raise Cancelled(f"sampling cancelled before step {run.done + 1} of {run.total}")
        t, t_next = run.schedule[i], run.schedule[i + 1]
        t_cpu, t_next_cpu = run.schedule_cpu[i], run.schedule_cpu[i + 1]
        v = _velocity(model, x, t, cfg_active(t_cpu, config), caches, start_pos)
        if config.rescale_enabled and bool(t_cpu < 1):
            v = rescale_velocity(v, x, t, config.rescale_k, config.rescale_sigma)
        if config.speaker_kv_scale is not None and bool(t_cpu >= tau) and bool(t_next_cpu < tau):
            caches.scale_speaker(1.0 / config.speaker_kv_scale)
        x = euler_step(x, v, t, t_next)
        run.done += 1
        if run.progress is not None:
            run.progress(run.done, run.total)
    return x


def _start(model, cond: Conditioning, config: SamplerConfig, blocks: int, progress, should_cancel, forward):
    schedule = timestep_schedule(config.num_steps, model.device)
    schedule_cpu = schedule.cpu()
    needs_cfg = any(cfg_active(t, config) for t in schedule_cpu[:-1])
    run = _Run(schedule, schedule_cpu, blocks * config.num_steps, progress, should_cancel)
    return _Caches(cond, config, needs_cfg, forward), run


@torch.inference_mode()
def sample(
    model,
    cond: Conditioning,
    config: SamplerConfig,
    *,
    seeds: Seeds,
    progress: ProgressCallback | None = None,
    should_cancel: ShouldCancel | None = None,
    cuda_graphs: bool = False,
) -> torch.Tensor:
    """Generate (B, config.sequence_length, 80) float32 latents (spec §6).

    ``seeds``: one per item, each item drawing from its own generator so it renders the same alone
    or in a batch; a single int instead uses one generator for the whole batch like upstream's
    ``rng_seed`` (identical for B = 1). ``progress(step, total)`` runs after every step;
    ``should_cancel()`` is asked before every step and True raises ``Cancelled``.
    ``cuda_graphs=True`` (CUDA models only; ignored elsewhere) replays each forward shape from a
    captured CUDA graph: bit-identical latents, without the per-kernel launch cost.
    """
    noise = _Noise(seeds, cond.batch_size, model.device, config.truncation_factor)
    forward = make_forward(model, cuda_graphs=cuda_graphs)
    caches, run = _start(model, cond, config, 1, progress, should_cancel, forward)
    x = noise.draw(config.sequence_length)  # (B, S, 80) float32
    if config.speaker_kv_scale is not None:
        caches.scale_speaker(config.speaker_kv_scale)
    return _denoise(model, x, caches, run, start_pos=0)


@torch.inference_mode()
def sample_blockwise(
    model,
    cond: Conditioning,
    config: SamplerConfig,
    block_sizes: Sequence[int],
    *,
    seeds: Seeds,
    continuation: torch.Tensor | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: ShouldCancel | None = None,
) -> torch.Tensor:
    """Blockwise generation (spec §7): returns the whole buffer (B, P + sum(block_sizes), 80)
    float32, the continuation prefix (B, P, 80) unchanged in front.

    Each block re-encodes the buffer with the latent encoder, draws its noise from each item's
    generator (in block order), re-applies force-speaker scaling and runs the full N-step loop at
    RoPE offset ``start_pos``. ``config.sequence_length`` is not used. ``progress`` counts
    ``len(block_sizes) * num_steps`` steps in all.
    """
    if not block_sizes or any(int(b) < 1 for b in block_sizes):
        raise InvalidInput(f"block_sizes must be a non-empty list of positive sizes, got {list(block_sizes)}")
    batch, device = cond.batch_size, model.device
    prefix = torch.zeros((batch, 0, LATENT_DIM)) if continuation is None else continuation
    if prefix.ndim != 3 or prefix.shape[0] != batch or prefix.shape[2] != LATENT_DIM:
        raise InvalidInput(f"continuation must be (B={batch}, P, {LATENT_DIM}), got {tuple(prefix.shape)}")
    total = prefix.shape[1] + sum(int(b) for b in block_sizes)
    if total % SPEAKER_PATCH_SIZE:
        raise InvalidInput(f"continuation + blocks = {total} latents; the total must be a multiple of 4")
    noise = _Noise(seeds, batch, device, config.truncation_factor)
    caches, run = _start(model, cond, config, len(block_sizes), progress, should_cancel, model)
    buffer = torch.zeros((batch, total, LATENT_DIM), device=device, dtype=torch.float32)  # (B, P+sum, 80)
    buffer[:, : prefix.shape[1]] = prefix.to(device=device, dtype=torch.float32)
    start_pos = prefix.shape[1]
    for size in (int(b) for b in block_sizes):
        if config.speaker_kv_scale is not None:
            caches.scale_speaker(config.speaker_kv_scale)
        caches.encode_prefix(model, buffer)
        x = noise.draw(size)  # (B, b, 80)
        buffer[:, start_pos : start_pos + size] = _denoise(model, x, caches, run, start_pos)
        start_pos += size
    return buffer


def first_flat_window(
    data: torch.Tensor,
    *,
    target_value: float = 0.0,
    window_size: int = FLATTEN_WINDOW,
    std_threshold: float = FLATTEN_STD,
    mean_threshold: float = FLATTEN_MEAN,
) -> int:
    """The window scan of spec §6.7 on data (S, ...): append ``window_size`` zero frames, then the
    first i whose ``window_size``-frame window (all its values) has unbiased std < ``std_threshold``
    and |mean - target_value| < ``mean_threshold``; S if none. Computed in float32."""
    length = data.shape[0]
    if length == 0:
        return 0
    padded = torch.cat([data.float(), data.new_zeros((window_size, *data.shape[1:]), dtype=torch.float32)])
    windows = padded.unfold(0, window_size, 1)[:length]  # (S, ..., W)
    flat = windows.movedim(-1, 1).reshape(length, -1)  # (S, W * ...), frame-major
    quiet = (flat.std(dim=1) < std_threshold) & ((flat.mean(dim=1) - target_value).abs() < mean_threshold)  # (S,)
    hits = torch.nonzero(quiet)
    return int(hits[0]) if hits.numel() else length


@torch.inference_mode()
def find_flattening_point(latents: torch.Tensor) -> int:
    """End of speech in (S, 80) latents (spec §6.7): the first i in 0..S-1 whose 20-frame window
    (after appending 20 zero frames) has unbiased std < 0.05 and |mean| < 0.1; S if none."""
    if latents.ndim != 2 or latents.shape[1] != LATENT_DIM:
        raise InvalidInput(f"latents must be (S, {LATENT_DIM}), got {tuple(latents.shape)}")
    return first_flat_window(latents)
