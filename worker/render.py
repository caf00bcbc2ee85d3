"""Rendering logic, free of Celery, Redis and storage: request -> SamplerConfig, text split
into generations, batched sampling with progress and cancel hooks, stitching and encoding.

Long text is split with ``echo_tts.text.split_text`` (sentence boundaries; never truncated),
rendered ``batch_size`` pieces per ``pipeline.synthesize_batch`` call, and joined with
``join_segments``. Piece ``i`` uses seed ``request.seed + i`` (recorded per piece), so a piece
renders the same alone or in a batch, and the same request and seed give the same samples.

A streamed render (``on_chunk``) hands each piece's share of the finished track to the caller as soon as
its batch is done. First audio is what a streaming client waits for, so the first piece is kept short
(``FIRST_PIECE_BYTES``: the first sentence or two) and rendered alone before the others are batched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from echo_tts.audio import encode_audio, join_segments
from echo_tts.config import SamplerConfig, sampler_preset
from echo_tts.errors import Cancelled
from echo_tts.text import split_text
from jobs.contract import SynthesisRequest
from jobs.errors import ErrorCode, ServiceError

SEED_SPACE = 2**63  # seeds wrap inside torch.Generator.manual_seed's accepted range
# ~120 UTF-8 bytes speak in ~8 s: a fitted canvas renders that in a fraction of a full one
FIRST_PIECE_BYTES = 120
ChunkSink = Callable[[int, np.ndarray, int], None]  # (piece index, samples (N,), sample rate)


class RenderCancelled(ServiceError):
    """Raised when the job's cancel flag was seen between diffusion steps."""

    code = ErrorCode.CANCELED


class RenderTimeLimit(ServiceError):
    """Raised when a render ran past its time limit (checked between diffusion steps)."""

    code = ErrorCode.TIME_LIMIT


class SynthResult(Protocol):
    samples: np.ndarray
    sample_rate: int
    metadata: dict[str, Any]


class PieceKeeper(Protocol):
    """Where a job's rendered pieces outlive a delivery (``worker/job_pieces.py``)."""

    def get(self, text: str, seed: int) -> SynthResult | None: ...
    def put(self, text: str, seed: int, result: SynthResult) -> None: ...


class SynthPipeline(Protocol):
    """The part of ``echo_tts.pipeline.Pipeline`` that rendering uses."""

    model_revision: str

    def synthesize_batch(
        self,
        texts: Sequence[str],
        speakers: Sequence[Any],
        config: SamplerConfig,
        seeds: Sequence[int],
        *,
        progress: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> Sequence[SynthResult]: ...


@dataclass(frozen=True)
class ProgressReport:
    """Where a render is: diffusion steps over the whole job, and pieces finished."""

    fraction: float
    step: int
    total_steps: int
    segments_done: int
    segments_total: int


@dataclass
class RenderControl:
    """Hooks into the outside world; all optional. ``cancel_requested`` is polled at most every
    ``poll_s`` seconds; ``deadline`` is a ``time.monotonic()`` value."""

    cancel_requested: Callable[[], bool] = lambda: False
    on_progress: Callable[[ProgressReport], None] = lambda report: None
    deadline: float | None = None
    poll_s: float = 0.2
    clock: Callable[[], float] = time.monotonic
    _last_poll: float = field(default=-1e18, repr=False)
    _reason: type[Exception] | None = field(default=None, repr=False)

    def should_stop(self) -> bool:
        """True when the job should stop now (cancel requested or time limit passed)."""
        now = self.clock()
        if self.deadline is not None and now > self.deadline:
            self._reason = RenderTimeLimit
            return True
        if now - self._last_poll >= self.poll_s:
            self._last_poll = now
            if self.cancel_requested():
                self._reason = RenderCancelled
                return True
        return False

    def stop_error(self) -> Exception:
        if self._reason is RenderTimeLimit:
            return RenderTimeLimit("the render ran past its time limit")
        return RenderCancelled("canceled while rendering")


@dataclass(frozen=True)
class Rendered:
    """The stitched track and what made it: one entry per piece (index, seed, chars, duration_s)."""

    samples: np.ndarray
    sample_rate: int
    pieces: list[dict[str, Any]]
    settings: dict[str, Any]
    model_revision: str

    @property
    def duration_s(self) -> float:
        return float(self.samples.shape[0]) / self.sample_rate


def sampler_config(request: SynthesisRequest) -> SamplerConfig:
    """The named preset with the request's overrides (null switches an option off)."""
    return sampler_preset(request.preset).replace(**request.overrides)


def piece_seeds(seed: int, count: int) -> list[int]:
    """Seed of piece ``i`` is ``seed + i`` (wrapping inside the generator's range)."""
    return [(seed + i) % SEED_SPACE for i in range(count)]


def plan_pieces(text: str, max_bytes: int | None = None, *, first_bytes: int | None = None) -> list[str]:
    """The generations a text needs; ``"".join(pieces) == text``. Whitespace-only text gives [].
    ``first_bytes`` cuts the first piece short (at a sentence or clause end where there is one)."""
    pieces = split_text(text) if max_bytes is None else split_text(text, max_bytes)
    if first_bytes is None or len(pieces) == 0 or len(pieces[0].encode()) <= first_bytes:
        return pieces
    first = split_text(text, first_bytes)[0]
    rest = text[len(first) :]
    if not rest.strip():
        return pieces
    return [first, *plan_pieces(rest, max_bytes)]


def first_canvas(pipeline: Any, text: str, config: SamplerConfig) -> int | None:
    """The canvas length ``text`` first renders with when the pipeline fits canvases (its ``canvas`` policy
    is ``auto``, under its ``max_latents`` cap); None with the fixed canvas, where every text shares one."""
    policy = getattr(pipeline, "canvas", None)
    if not getattr(policy, "auto", False):
        return None
    cap = min(config.sequence_length, getattr(pipeline, "max_latents", None) or config.sequence_length)
    return int(policy.first_canvas(text, cap))  # type: ignore[union-attr]


def canvas_order(pipeline: Any, pieces: Sequence[str], config: SamplerConfig) -> list[int]:
    """Piece indices in the order they are batched: as written, or with fitted canvases by first canvas,
    so a batch holds one canvas length where it can (a sampler call renders each length apart). Each
    piece keeps its seed: the track is the same."""
    canvases = [first_canvas(pipeline, piece, config) or 0 for piece in pieces]
    return sorted(range(len(pieces)), key=canvases.__getitem__)


def plan_batches(count: int, batch_size: int, *, lead: int | None = None) -> list[range]:
    """Piece indices per sampler call, in order; ``lead`` pieces go first in a batch of their own."""
    start, batches = 0, []
    if lead and count > lead:
        batches.append(range(0, lead))
        start = lead
    batches += [range(lo, min(lo + batch_size, count)) for lo in range(start, count, batch_size)]
    return batches


class TrackChunks:
    """The joined track cut into one chunk per piece as the pieces arrive: the pause before the piece,
    then the piece with its fades. Concatenated, the chunks are exactly ``join_segments(pieces)`` (a
    piece rendered to nothing gives an empty chunk and no pause, as there)."""

    def __init__(self, sample_rate: int, pause_s: float) -> None:
        self.sample_rate, self.pause_s = sample_rate, pause_s
        self._started = False

    def add(self, samples: np.ndarray) -> np.ndarray:
        faded = join_segments([samples], self.sample_rate, pause_s=self.pause_s)  # one piece: fades only
        if faded.size == 0:
            return faded
        if not self._started:
            self._started = True
            return faded
        pause = np.zeros(int(round(self.pause_s * self.sample_rate)), dtype=np.float32)
        return np.concatenate([pause, faded])


def render(
    pipeline: SynthPipeline,
    request: SynthesisRequest,
    speaker: Any,
    *,
    batch_size: int = 4,
    pause_s: float = 0.25,
    control: RenderControl | None = None,
    max_piece_bytes: int | None = None,
    on_chunk: ChunkSink | None = None,
    kept: PieceKeeper | None = None,
) -> Rendered:
    """Render the whole request. Raises RenderCancelled / RenderTimeLimit from the hooks, and the
    model library's ``InvalidInput`` errors for input the model refuses. ``on_chunk`` receives each
    piece's share of the track (``TrackChunks``) in order, as soon as the piece is rendered. ``kept``
    (used when there is more than one batch) gives back the pieces an earlier delivery of this job
    finished and keeps each piece this one renders."""
    control = control or RenderControl()
    config = sampler_config(request)
    streamed = on_chunk is not None
    pieces = plan_pieces(request.text, max_piece_bytes, first_bytes=FIRST_PIECE_BYTES if streamed else None)
    if not pieces:
        from echo_tts.errors import InvalidInput

        raise InvalidInput("text is empty after removing whitespace")
    seeds = piece_seeds(request.seed, len(pieces))
    order = list(range(len(pieces))) if streamed else canvas_order(pipeline, pieces, config)
    batches = [order[r.start : r.stop] for r in plan_batches(len(pieces), batch_size, lead=1 if streamed else None)]
    chunks: TrackChunks | None = None
    total_steps = config.num_steps * len(batches)
    kept = kept if len(batches) > 1 else None  # one sampler call: nothing to resume between
    found: dict[int, SynthResult] = {}
    reused: set[int] = set()  # pieces an earlier delivery rendered and kept
    done: dict[int, SynthResult] = {}  # by piece index
    if control.should_stop():
        raise control.stop_error()
    for number, batch in enumerate(batches):
        done_before, steps_before = len(done), number * config.num_steps
        if kept is not None:
            found = {i: piece for i in batch if (piece := kept.get(pieces[i], seeds[i])) is not None}
            reused |= set(found)
        todo = [i for i in batch if i not in found]

        def progress(step: int, total: int, done_before: int = done_before, steps_before: int = steps_before) -> None:
            # with fitted canvases a batch may take several sampler calls (retries at a larger canvas):
            # ``total`` then grows past num_steps, so the batch's share is step / total
            overall = steps_before + round(config.num_steps * step / max(total, 1))
            control.on_progress(ProgressReport(overall / total_steps, overall, total_steps, done_before, len(pieces)))

        try:
            rendered = (
                pipeline.synthesize_batch(
                    [pieces[i] for i in todo],
                    [speaker] * len(todo),
                    config,
                    [seeds[i] for i in todo],
                    progress=progress,
                    should_cancel=control.should_stop,
                )
                if todo
                else []
            )
        except Cancelled:
            raise control.stop_error() from None
        for index, result in zip(todo, rendered, strict=True):
            found[index] = result
            if kept is not None:
                kept.put(pieces[index], seeds[index], result)
        done |= {i: found[i] for i in batch}
        if on_chunk is not None:  # streamed: batches are in piece order
            chunks = chunks or TrackChunks(int(done[0].sample_rate), pause_s)
            for index in batch:
                on_chunk(index, chunks.add(np.asarray(done[index].samples)), chunks.sample_rate)
        control.on_progress(
            ProgressReport(
                (number + 1) / len(batches), (number + 1) * config.num_steps, total_steps, len(done), len(pieces)
            )
        )
    return _assemble(pipeline, pieces, seeds, [done[i] for i in range(len(pieces))], pause_s, reused)


def _assemble(
    pipeline: SynthPipeline,
    pieces: Sequence[str],
    seeds: Sequence[int],
    results: Sequence[SynthResult],
    pause_s: float,
    reused: set[int] | None = None,
) -> Rendered:
    """One job's rendered pieces joined into its track, with what made each piece."""
    rate = int(results[0].sample_rate)
    samples = join_segments([r.samples for r in results], rate, pause_s=pause_s)
    described = [
        {
            "index": i,
            "seed": seeds[i],
            "chars": len(pieces[i]),
            "duration_s": round(r.samples.shape[0] / rate, 4),
            # the canvas the kept render used, and how often a fitted one was too short
            **{k: r.metadata[k] for k in ("canvas_latents", "canvas_retries") if k in r.metadata},
            **({"kept": True} if reused and i in reused else {}),
        }
        for i, r in enumerate(results)
    ]
    return Rendered(
        samples,
        rate,
        described,
        dict(results[0].metadata.get("settings") or {}),
        str(getattr(pipeline, "model_revision", "unknown")),
    )


@dataclass(frozen=True)
class JobToRender:
    """One job of a cross-job batch: its request and its resolved speaker (None: no voice)."""

    request: SynthesisRequest
    speaker: Any


def render_many(
    pipeline: SynthPipeline,
    jobs: Sequence[JobToRender],
    *,
    batch_size: int = 4,
    pause_s: float = 0.25,
    control: RenderControl | None = None,
    max_piece_bytes: int | None = None,
) -> list[Rendered]:
    """Several jobs that share sampler settings, their pieces rendered together ``batch_size`` per sampler
    call; one ``Rendered`` per job, in order. Piece ``i`` of a job keeps seed ``job seed + i``, so each
    job's track is the one :func:`render` gives it alone. ``control`` stops them all; ``on_progress``
    reports steps over the whole batch (``segments_done`` counts the batch's pieces)."""
    control = control or RenderControl()
    config = sampler_config(jobs[0].request)
    if any(sampler_config(job.request) != config for job in jobs[1:]):
        raise ValueError("jobs rendered together must share their sampler settings (jobs.company.batch_key)")
    plans = [plan_pieces(job.request.text, max_piece_bytes) for job in jobs]
    if not all(plans):
        from echo_tts.errors import InvalidInput

        raise InvalidInput("text is empty after removing whitespace")
    seeds = [piece_seeds(job.request.seed, len(pieces)) for job, pieces in zip(jobs, plans, strict=True)]
    flat = [(j, i) for j, pieces in enumerate(plans) for i in range(len(pieces))]
    calls = plan_batches(len(flat), batch_size)
    total_steps = config.num_steps * len(calls)
    results: dict[tuple[int, int], SynthResult] = {}
    if control.should_stop():
        raise control.stop_error()
    for number, call in enumerate(calls):
        members = [flat[k] for k in call]
        steps_before, done_before = number * config.num_steps, call.start

        def progress(step: int, total: int, steps_before: int = steps_before, done_before: int = done_before) -> None:
            overall = steps_before + round(config.num_steps * step / max(total, 1))
            control.on_progress(ProgressReport(overall / total_steps, overall, total_steps, done_before, len(flat)))

        try:
            rendered = pipeline.synthesize_batch(
                [plans[j][i] for j, i in members],
                [jobs[j].speaker for j, _ in members],
                config,
                [seeds[j][i] for j, i in members],
                progress=progress,
                should_cancel=control.should_stop,
            )
        except Cancelled:
            raise control.stop_error() from None
        results.update(zip(members, rendered, strict=True))
        done = (number + 1) * config.num_steps
        control.on_progress(ProgressReport(done / total_steps, done, total_steps, call.stop, len(flat)))
    return [
        _assemble(pipeline, pieces, seeds[j], [results[(j, i)] for i in range(len(pieces))], pause_s)
        for j, pieces in enumerate(plans)
    ]


def encode_output(rendered: Rendered, fmt: str, sample_rate: int | None = None) -> bytes:
    """The file bytes for ``fmt`` (resampled to ``sample_rate`` when given)."""
    return encode_audio(rendered.samples, rendered.sample_rate, fmt, out_sample_rate=sample_rate)
