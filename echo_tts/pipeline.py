"""Text (+ reference voice) to waveform: the end-to-end Echo-TTS pipeline (spec §2).

:class:`Pipeline` holds the three loaded parts — EchoDiT, the S1-DAC autoencoder and the PCA
basis — built once, and renders text with them under ``torch.inference_mode``:
normalise + tokenize (``TextTooLong`` over 768 tokens; splitting long text is the caller's
job, see :func:`echo_tts.text.split_text`) → speaker K/V → Euler CFG sampling → PCA + AE
decode → crop at the end-of-speech flattening point.
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
from .compilation import compile_echo_dit
from .config import (
    AE_DOWNSAMPLE_FACTOR,
    DEFAULT_AE_REPO,
    DEFAULT_MODEL_REPO,
    DEFAULT_PRESET,
    SAMPLE_RATE,
    SamplerConfig,
    sampler_preset,
)
from .dtypes import as_dtype
from .errors import InvalidInput
from .fingerprint import fingerprint_files, weights_revision
from .model import EchoDiT
from .pca import PCAState
from .sampler import ProgressCallback, ShouldCancel, encode_conditioning, find_flattening_point, sample
from .speaker import SpeakerLatents, batch_speakers, empty_speaker, speaker_latents_from_audio
from .text import encode_texts
from .weights import load_echo_dit, load_pca

# as_dtype, fingerprint_files and the default repos live in their own modules; importable from here too
__all__ = ["DEFAULT_AE_REPO", "DEFAULT_MODEL_REPO", "Pipeline", "SynthesisResult", "as_dtype", "fingerprint_files"]


@dataclass(frozen=True)
class SynthesisResult:
    """One rendered item: ``samples`` (N,) float32 in [-1, 1] at ``sample_rate`` Hz, and ``metadata``
    (``normalized_text``, ``duration_s``, ``seed``, ``settings`` (the SamplerConfig as a dict),
    ``num_latents`` (the flattening point), ``model_revision``)."""

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
    """

    def __init__(
        self,
        model: EchoDiT,
        autoencoder: FishS1DAC,
        pca: PCAState,
        *,
        model_revision: str = "unknown",
        cuda_graphs: bool = True,
    ):
        self.model = model
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
    ) -> Pipeline:
        """Load the DiT (without the blockwise-only tensors unless ``keep_blockwise``), the PCA and the AE.

        ``model_repo``/``ae_repo``: a Hugging Face repo id or a directory with the published files.
        ``compile=True`` wraps the DiT forward in ``torch.compile`` (worth it on GPUs only).
        ``cuda_graphs`` (on by default, CUDA only) replays each sampler step from a CUDA graph:
        bit-identical latents without the Python launch cost; it is off when ``compile`` is on.
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
        return cls(model, autoencoder, pca, model_revision=revision, cuda_graphs=cuda_graphs and not compile)

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
    @staticmethod
    def _config(config: SamplerConfig | str) -> SamplerConfig:
        if isinstance(config, SamplerConfig):
            return config
        return sampler_preset(str(config))

    def synthesize(
        self,
        text: str,
        speaker: SpeakerLatents | None = None,
        config: SamplerConfig | str = DEFAULT_PRESET,
        seed: int = 0,
        *,
        progress: ProgressCallback | None = None,
        should_cancel: ShouldCancel | None = None,
    ) -> SynthesisResult:
        """Render one text (at most 768 tokens after normalisation) in ``speaker``'s voice.

        ``speaker=None`` renders without a reference (speaker fully masked, spec §4.2).
        ``config`` is a :class:`SamplerConfig` or a preset name. ``progress(step, total)`` is
        called after every diffusion step; ``should_cancel()`` returning True raises ``Cancelled``.
        """
        results = self.synthesize_batch(
            [text], [speaker], config, [seed], progress=progress, should_cancel=should_cancel
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
    ) -> list[SynthesisResult]:
        """Render several texts in one sampler batch; item i uses ``speakers[i]`` and ``seeds[i]``.

        Each item draws its own noise from its own seed, so it renders the same alone or in a
        batch (within float tolerance). Each item is cropped at **its own** flattening point
        (upstream's ``sample_pipeline`` crops every item at item 0's point; items here are
        independent renders, so that would cut or pad the others arbitrarily).
        """
        texts = list(texts)
        speakers = list(speakers) if speakers is not None else [None] * len(texts)
        seeds = [int(s) for s in seeds] if seeds is not None else [0] * len(texts)
        if not (len(texts) == len(speakers) == len(seeds)):
            raise InvalidInput(f"got {len(texts)} texts, {len(speakers)} speakers and {len(seeds)} seeds")
        cfg = self._config(config)
        batch = encode_texts(texts).to(self.device)
        latents_in, mask = batch_speakers([s if s is not None else empty_speaker() for s in speakers])
        cond = encode_conditioning(self.model, batch, latents_in.to(self.device), mask.to(self.device))
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
        waves = self._decode(latents, max(points))  # (B, 2048 * max(points)) float32
        settings = dataclasses.asdict(cfg)
        results = []
        for i, point in enumerate(points):
            samples = waves[i, : point * AE_DOWNSAMPLE_FACTOR].numpy().astype(np.float32, copy=False)
            metadata = {
                "normalized_text": batch.normalized[i],
                "duration_s": samples.shape[0] / SAMPLE_RATE,
                "seed": seeds[i],
                "settings": dict(settings),
                "num_latents": point,
                "model_revision": self.model_revision,
            }
            results.append(SynthesisResult(samples, SAMPLE_RATE, metadata))
        return results

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
