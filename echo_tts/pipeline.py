"""Text (+ reference voice) to waveform: the end-to-end Echo-TTS pipeline (spec §2).

:class:`Pipeline` holds the three loaded parts — EchoDiT, the S1-DAC autoencoder and the PCA
basis — built once, and renders text with them under ``torch.inference_mode``:
normalise + tokenize (``TextTooLong`` over 768 tokens; splitting long text is the caller's
job, see :func:`echo_tts.text.split_text`) → speaker K/V → Euler CFG sampling → PCA + AE
decode → crop at the end-of-speech flattening point. The canvas sampled is the fixed
``sequence_length`` (upstream) or, with ``canvas="auto"``, fitted to each text
(:mod:`echo_tts.canvas`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .audio import AudioSource, load_audio
from .autoencoder import FishS1DAC
from .autoencoder_weights import load_autoencoder
from .canvas import CanvasPolicy, canvas_policy, speech_ends_inside
from .compilation import compile_echo_dit
from .config import (
    AE_DOWNSAMPLE_FACTOR,
    DEFAULT_AE_REPO,
    DEFAULT_MODEL_REPO,
    DEFAULT_PRESET,
    MAX_SEQUENCE_LENGTH,
    SAMPLE_RATE,
    SamplerConfig,
    sampler_preset,
)
from .dtypes import as_dtype
from .errors import InvalidInput
from .fingerprint import fingerprint_files, weights_revision
from .model import EchoDiT, KVCache
from .pca import PCAState
from .sampler import Conditioning, ProgressCallback, ShouldCancel, encode_conditioning, find_flattening_point, sample
from .speaker import SpeakerLatents, batch_speakers, empty_speaker, speaker_latents_from_audio
from .text import encode_texts
from .weights import load_echo_dit, load_pca

# as_dtype, fingerprint_files and the default repos live in their own modules; importable from here too
__all__ = [
    "DEFAULT_AE_REPO",
    "DEFAULT_MODEL_REPO",
    "CanvasPolicy",
    "Pipeline",
    "SynthesisResult",
    "as_dtype",
    "fingerprint_files",
]


@dataclass(frozen=True)
class SynthesisResult:
    """One rendered item: ``samples`` (N,) float32 in [-1, 1] at ``sample_rate`` Hz, and ``metadata``
    (``normalized_text``, ``duration_s``, ``seed``, ``settings`` (the SamplerConfig as a dict),
    ``num_latents`` (the flattening point), ``model_revision``, and the canvas: ``canvas`` (the
    mode, ``"fixed"``/``"auto"``), ``canvas_latents`` (frames sampled by the render kept) and
    ``canvas_retries`` (renders redone with a longer canvas, always 0 when fixed))."""

    samples: np.ndarray
    sample_rate: int
    metadata: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate


class Pipeline:
    """EchoDiT + S1-DAC + PCA, loaded once; renders text in a voice.

    Build it with :meth:`from_pretrained` (hub repo ids or local directories), or directly from
    loaded parts (tests). Every public method runs under ``torch.inference_mode``.
    ``canvas`` (``"fixed"``, ``"auto"`` or a :class:`~echo_tts.canvas.CanvasPolicy`) is the
    default canvas policy of the synthesis methods (see :mod:`echo_tts.canvas`). ``max_latents``
    (None: no cap) caps every config's ``sequence_length``: upstream's 8 GB recipe samples 576
    latents (26.7 s) instead of 640, with the autoencoder in bfloat16.
    """

    def __init__(
        self,
        model: EchoDiT,
        autoencoder: FishS1DAC,
        pca: PCAState,
        *,
        model_revision: str = "unknown",
        cuda_graphs: bool = True,
        canvas: str | CanvasPolicy = "fixed",
        max_latents: int | None = None,
    ):
        if max_latents is not None and not 1 <= max_latents <= MAX_SEQUENCE_LENGTH:
            raise InvalidInput(f"max_latents must be between 1 and {MAX_SEQUENCE_LENGTH}, got {max_latents}")
        self.max_latents = max_latents
        self.model = model
        self.canvas = canvas_policy(canvas)
        self.cuda_graphs = cuda_graphs  # replay sampler steps from CUDA graphs (CUDA only; same latents)
        self.autoencoder = autoencoder
        self.pca = pca.to(model.device)
        self.model_revision = model_revision

    @classmethod
    def from_pretrained(
        cls,
        model_repo: str | os.PathLike[str] = DEFAULT_MODEL_REPO,
        ae_repo: str | os.PathLike[str] = DEFAULT_AE_REPO,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.bfloat16,
        ae_dtype: torch.dtype | str = torch.float32,
        token: str | None = None,
        keep_blockwise: bool = False,
        compile: bool = False,
        cuda_graphs: bool = True,
        canvas: str | CanvasPolicy = "fixed",
        max_latents: int | None = None,
    ) -> Pipeline:
        """Load the DiT (without the blockwise-only tensors unless ``keep_blockwise``), the PCA and the AE.

        ``model_repo``/``ae_repo``: a Hugging Face repo id or a directory with the published files.
        ``compile=True`` wraps the DiT forward in ``torch.compile`` (worth it on GPUs only).
        ``cuda_graphs`` (on by default, CUDA only) replays each sampler step from a CUDA graph:
        bit-identical latents without the Python launch cost; it is off when ``compile`` is on.
        ``canvas``: the default canvas policy, ``"fixed"`` (upstream) or ``"auto"`` (fitted).
        ``max_latents``: the longest canvas any render samples (None: the config's own).
        Raises :class:`~echo_tts.errors.WeightsError` subclasses naming the missing/mismatched file.
        """
        model_repo, ae_repo = os.fspath(model_repo), os.fspath(ae_repo)
        model = load_echo_dit(
            model_repo, device=device, dtype=as_dtype(dtype), token=token, drop_blockwise=not keep_blockwise
        )
        pca = load_pca(model_repo, device=device, token=token)
        autoencoder = load_autoencoder(ae_repo, device=device, dtype=as_dtype(ae_dtype), token=token)
        if compile:
            compile_echo_dit(model)
        revision = weights_revision(model_repo, ae_repo, token)
        return cls(
            model,
            autoencoder,
            pca,
            model_revision=revision,
            cuda_graphs=cuda_graphs and not compile,
            canvas=canvas,
            max_latents=max_latents,
        )

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    # --- speaker -------------------------------------------------------------------------
    def _encode_chunk(self, audio: torch.Tensor) -> torch.Tensor:
        """(1, 1, C) audio -> (1, C/2048, 80) float32 latents: AE ``encode_zq`` then PCA (spec §4.3)."""
        ae_param = next(self.autoencoder.parameters())
        z_q = self.autoencoder.encode_zq(audio.to(ae_param.device, ae_param.dtype))  # (1, 1024, T)
        return self.pca.encode(z_q)  # (1, T, 80)

    @torch.inference_mode()
    def encode_speaker(self, audio: torch.Tensor | AudioSource) -> SpeakerLatents:
        """Speaker latents of a reference clip: a (1, N) tensor at 44.1 kHz, or a path/bytes/file to decode.

        At most 300 s are used, in independent ~30 s chunks (spec §4.2). The result can be saved
        (``.save(path)``) and reused for any number of renders.
        """
        if not isinstance(audio, torch.Tensor):
            audio = load_audio(audio)
        elif audio.ndim == 1:
            audio = audio.unsqueeze(0)  # (1, N)
        return speaker_latents_from_audio(audio.float(), self._encode_chunk)

    # --- synthesis -----------------------------------------------------------------------
    def _config(self, config: SamplerConfig | str) -> SamplerConfig:
        cfg = config if isinstance(config, SamplerConfig) else sampler_preset(str(config))
        if self.max_latents is not None and cfg.sequence_length > self.max_latents:
            return cfg.replace(sequence_length=self.max_latents)
        return cfg

    def synthesize(
        self,
        text: str,
        speaker: SpeakerLatents | None = None,
        config: SamplerConfig | str = DEFAULT_PRESET,
        seed: int = 0,
        *,
        progress: ProgressCallback | None = None,
        should_cancel: ShouldCancel | None = None,
        canvas: str | CanvasPolicy | None = None,
    ) -> SynthesisResult:
        """Render one text (at most 768 tokens after normalisation) in ``speaker``'s voice.

        ``speaker=None`` renders without a reference (speaker fully masked, spec §4.2).
        ``config`` is a :class:`SamplerConfig` or a preset name. ``progress(step, total)`` is
        called after every diffusion step; ``should_cancel()`` returning True raises ``Cancelled``.
        ``canvas``: ``"fixed"``, ``"auto"`` or a CanvasPolicy; None uses the Pipeline's default.
        """
        results = self.synthesize_batch(
            [text], [speaker], config, [seed], progress=progress, should_cancel=should_cancel, canvas=canvas
        )
        return results[0]

    @torch.inference_mode()
    def synthesize_batch(
        self,
        texts: Sequence[str],
        speakers: Sequence[SpeakerLatents | None] | None,
        config: SamplerConfig | str = DEFAULT_PRESET,
        seeds: Sequence[int] | None = None,
        *,
        progress: ProgressCallback | None = None,
        should_cancel: ShouldCancel | None = None,
        canvas: str | CanvasPolicy | None = None,
    ) -> list[SynthesisResult]:
        """Render several texts in one sampler batch; item i uses ``speakers[i]`` and ``seeds[i]``.

        Each item draws its own noise from its own seed, so it renders the same alone or in a
        batch (within float tolerance). Each item is cropped at **its own** flattening point
        (upstream's ``sample_pipeline`` crops every item at item 0's point; items here are
        independent renders, so that would cut or pad the others arbitrarily).

        ``canvas`` (None: the Pipeline's default): with ``"fixed"`` the whole batch is one sampler
        call of ``config.sequence_length`` frames. With ``"auto"`` items are **grouped by canvas**:
        one sampler call per distinct canvas length, in ascending order, so an item's canvas, and
        hence its audio, never depends on what else is in the batch. Items whose end of speech is
        not inside their canvas render again (same seed) with the next bucket, grouped the same way.
        ``progress(step, total)`` then counts the steps of all those calls: ``total`` is
        ``num_steps`` times the calls planned so far and grows when a retry is planned; ``step``
        never goes back.
        """
        texts = list(texts)
        speakers = list(speakers) if speakers is not None else [None] * len(texts)
        seeds = [int(s) for s in seeds] if seeds is not None else [0] * len(texts)
        if not (len(texts) == len(speakers) == len(seeds)):
            raise InvalidInput(f"got {len(texts)} texts, {len(speakers)} speakers and {len(seeds)} seeds")
        cfg = self._config(config)
        policy = self.canvas if canvas is None else canvas_policy(canvas)
        batch = encode_texts(texts).to(self.device)
        latents_in, mask = batch_speakers([s if s is not None else empty_speaker() for s in speakers])
        cond = encode_conditioning(self.model, batch, latents_in.to(self.device), mask.to(self.device))
        if policy.auto:
            renders = self._sample_fitted(cond, cfg, policy, batch.normalized, seeds, progress, should_cancel)
            points = [render.point for render in renders]
            waves = self._decode(_stack_prefixes([render.latents for render in renders], max(points)), max(points))
        else:
            latents = sample(
                self.model,
                cond,
                cfg,
                seeds=seeds,
                progress=progress,
                should_cancel=should_cancel,
                cuda_graphs=self.cuda_graphs,
            )
            points = [int(find_flattening_point(latents[i])) for i in range(len(texts))]
            renders = [_Render(latents[i], point, cfg.sequence_length) for i, point in enumerate(points)]
            waves = self._decode(latents, max(points))  # (B, 2048 * max(points)) float32
        settings = dataclasses.asdict(cfg)
        results = []
        for i, render in enumerate(renders):
            samples = waves[i, : render.point * AE_DOWNSAMPLE_FACTOR].numpy().astype(np.float32, copy=False)
            metadata = {
                "normalized_text": batch.normalized[i],
                "duration_s": samples.shape[0] / SAMPLE_RATE,
                "seed": seeds[i],
                "settings": dict(settings),
                "num_latents": render.point,
                "model_revision": self.model_revision,
                "canvas": policy.mode,
                "canvas_latents": render.canvas,
                "canvas_retries": render.retries,
            }
            results.append(SynthesisResult(samples, SAMPLE_RATE, metadata))
        return results

    def _sample_fitted(
        self,
        cond: Conditioning,
        cfg: SamplerConfig,
        policy: CanvasPolicy,
        texts: Sequence[str],
        seeds: Sequence[int],
        progress: ProgressCallback | None,
        should_cancel: ShouldCancel | None,
    ) -> list[_Render]:
        """Auto canvases: sample each group of items sharing a canvas length in one call; items
        without their end of speech inside the canvas go round again with the next length."""
        cap = cfg.sequence_length
        canvases = [policy.first_canvas(text, cap) for text in texts]
        retries = [0] * len(texts)
        renders: dict[int, _Render] = {}
        steps = _StepCounter(progress, cfg.num_steps)
        pending = list(range(len(texts)))
        while pending:
            groups = {
                length: [i for i in pending if canvases[i] == length]
                for length in sorted(set(canvases[i] for i in pending))
            }
            steps.plan(len(groups))
            pending = []
            for length, rows in groups.items():
                latents = sample(
                    self.model,
                    _select_rows(cond, rows),
                    cfg.replace(sequence_length=length),
                    seeds=[seeds[i] for i in rows],
                    progress=steps.hook(),
                    should_cancel=should_cancel,
                    cuda_graphs=self.cuda_graphs,
                )  # (len(rows), length, 80)
                for row, i in enumerate(rows):
                    point = int(find_flattening_point(latents[row]))
                    bigger = policy.next_canvas(length, cap)
                    if bigger is None or speech_ends_inside(point, length):
                        renders[i] = _Render(latents[row], point, length, retries[i])
                    else:
                        canvases[i], retries[i] = bigger, retries[i] + 1
                        pending.append(i)
        return [renders[i] for i in range(len(texts))]

    def _decode(self, latents: torch.Tensor, length: int) -> torch.Tensor:
        """latents (B, S, 80) -> waveforms (B, 2048 * length) float32 on the CPU.

        Only the first ``length`` frames are decoded: the S1-DAC decoder is causal, so the
        samples before a crop point do not depend on the frames after it (spec §5.4).
        """
        if length == 0:
            return torch.zeros(latents.shape[0], 0)
        return self.decode_latents(latents[:, :length])

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, T, 80) -> waveform (B, 2048 * T) float32 on the CPU, uncropped (spec §4.3)."""
        ae_param = next(self.autoencoder.parameters())
        z_q = self.pca.decode(latents.to(self.pca.pca_mean.device))  # (B, 1024, T) float32
        audio = self.autoencoder.decode_zq(z_q.to(ae_param.device, ae_param.dtype))  # (B, 1, 2048 T)
        return audio[:, 0].float().cpu()  # (B, 2048 T)

    @torch.inference_mode()
    def encode_latents(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, 1, N) at 44.1 kHz -> latents (B, ceil(N/2048), 80) float32, no chunking (spec §4.3)."""
        return self._encode_chunk(audio)


@dataclass(frozen=True)
class _Render:
    """One item's kept sampler output: latents (S, 80), its flattening point, canvas length S."""

    latents: torch.Tensor
    point: int
    canvas: int
    retries: int = 0


class _StepCounter:
    """Turns the per-call progress of several sampler calls into one ``progress(step, total)``."""

    def __init__(self, progress: ProgressCallback | None, steps_per_call: int) -> None:
        self.progress, self.steps_per_call = progress, steps_per_call
        self.calls_planned = self.calls_started = 0

    def plan(self, calls: int) -> None:
        self.calls_planned += calls

    def hook(self) -> ProgressCallback | None:
        """The callback for the next sampler call."""
        self.calls_started += 1
        if self.progress is None:
            return None
        progress, before, total = self.progress, (self.calls_started - 1) * self.steps_per_call, self.calls_planned
        return lambda step, _total: progress(before + step, total * self.steps_per_call)


def _select_rows(cond: Conditioning, rows: Sequence[int]) -> Conditioning:
    """The conditioning of some batch items, in ``rows`` order (``cond`` itself for all of them)."""
    if list(rows) == list(range(cond.batch_size)):
        return cond
    index = torch.tensor(list(rows), device=cond.text_mask.device)

    def pick(cache: KVCache) -> KVCache:
        return [(k.index_select(0, index), v.index_select(0, index)) for k, v in cache]

    return Conditioning(
        text_kv=pick(cond.text_kv),
        text_mask=cond.text_mask.index_select(0, index),
        speaker_kv=pick(cond.speaker_kv),
        speaker_mask=cond.speaker_mask.index_select(0, index),
    )


def _stack_prefixes(latents: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """Items' latents (S_i, 80) -> (B, length, 80): each cut to ``length`` frames, or zero-padded
    to it. Only frames before each item's own crop point reach its audio (the decoder is causal)."""
    out = latents[0].new_zeros((len(latents), length, latents[0].shape[-1]))
    for i, item in enumerate(latents):
        frames = min(length, item.shape[0])
        out[i, :frames] = item[:frames]
    return out
