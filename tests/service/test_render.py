"""Rendering logic with a fake pipeline: splitting, seeds, batching, stitching, cancel, progress."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from echo_tts.audio import join_segments
from echo_tts.canvas import CanvasPolicy
from echo_tts.config import SamplerConfig
from echo_tts.errors import Cancelled, InvalidInput
from jobs.contract import SynthesisRequest, job_pieces_prefix
from jobs.storage import LocalStorage
from worker.job_pieces import JobPieces, clear_pieces
from worker.render import (
    FIRST_PIECE_BYTES,
    ProgressReport,
    RenderCancelled,
    RenderControl,
    RenderTimeLimit,
    TrackChunks,
    encode_output,
    piece_seeds,
    plan_batches,
    plan_pieces,
    render,
    sampler_config,
)

RATE = 44_100


@dataclass
class FakeResult:
    samples: np.ndarray
    sample_rate: int
    metadata: dict[str, Any]


@dataclass
class FakePipeline:
    """Renders each text as 0.1 s of a constant derived from its seed; records every call."""

    model_revision: str = "fake-rev"
    calls: list[tuple[list[str], list[int], SamplerConfig]] = field(default_factory=list)

    def synthesize_batch(
        self,
        texts: Sequence[str],
        speakers: Sequence[Any],
        config: SamplerConfig,
        seeds: Sequence[int],
        *,
        progress: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[FakeResult]:
        self.calls.append((list(texts), list(seeds), config))
        for step in range(1, config.num_steps + 1):
            if should_cancel and should_cancel():
                raise Cancelled("stop")
            if progress:
                progress(step, config.num_steps)
        return [
            FakeResult(np.full(RATE // 10, (s % 100) / 200, np.float32), RATE, {"settings": {"n": 1}}) for s in seeds
        ]


def _request(text: str = "One sentence.", **changes: Any) -> SynthesisRequest:
    values: dict[str, Any] = {"job_id": "j", "text": text, "seed": 10, "overrides": {"num_steps": 3}} | changes
    return SynthesisRequest(**values)


def test_overrides_change_the_preset_and_null_switches_an_option_off() -> None:
    # Given a Flat preset with truncation, and overrides
    request = _request(preset="Independent-Low-CFG-Flat", overrides={"num_steps": 5, "truncation_factor": None})
    # When it becomes a sampler config
    config = sampler_config(request)
    # Then the overrides win and the rest is the preset's
    assert (config.num_steps, config.truncation_factor, config.cfg_scale_speaker) == (5, None, 3.0)


def test_a_short_text_renders_in_one_call_with_the_request_seed() -> None:
    # Given one sentence
    pipeline = FakePipeline()
    # When it renders
    rendered = render(pipeline, _request(), speaker=None)
    # Then one call, seed as asked, no stitching pauses
    assert [c[1] for c in pipeline.calls] == [[10]]
    assert rendered.samples.shape == (RATE // 10,) and rendered.pieces[0]["seed"] == 10
    assert rendered.model_revision == "fake-rev"


def test_long_text_is_split_batched_seeded_per_piece_and_stitched_without_loss() -> None:
    # Given text of five sentences and a piece limit that fits one sentence each, batches of two
    sentences = [f"Sentence number {i} is here." for i in range(5)]
    text = " ".join(sentences)
    pipeline = FakePipeline()
    # When it renders
    rendered = render(pipeline, _request(text), None, batch_size=2, pause_s=0.5, max_piece_bytes=40)
    # Then the pieces cover the whole text in order, three batches, seed + index per piece
    assert "".join(t for c in pipeline.calls for t in c[0]) == text
    assert [len(c[0]) for c in pipeline.calls] == [2, 2, 1]
    assert [p["seed"] for p in rendered.pieces] == [10, 11, 12, 13, 14] == piece_seeds(10, 5)
    # And the track is every piece plus a pause between each
    assert rendered.samples.shape[0] == 5 * (RATE // 10) + 4 * int(0.5 * RATE)
    assert rendered.duration_s == pytest.approx(0.5 + 2.0)


def test_with_fitted_canvases_pieces_are_batched_by_canvas_and_the_track_keeps_its_order() -> None:
    # Given fitted canvases and a text whose pieces alternate short (~1.5 s) and long (~12 s), batches of two
    short, long = "Yes, it is.", "This one goes on for quite a while, clause after clause, until it ends."
    text = " ".join([short, long * 2, short, long * 2])
    fitted = FakePipeline()
    fitted.canvas = CanvasPolicy("auto")  # type: ignore[attr-defined]
    # When it renders, and the same request renders with a fixed canvas
    together = render(fitted, _request(text), None, batch_size=2, pause_s=0.5, max_piece_bytes=150)
    as_written = render(FakePipeline(), _request(text), None, batch_size=2, pause_s=0.5, max_piece_bytes=150)
    # Then each sampler call held pieces of one canvas length: the two short ones, then the two long ones
    assert [[t == short + " " or t == short for t in c[0]] for c in fitted.calls] == [[True, True], [False, False]]
    assert [c[1] for c in fitted.calls] == [[10, 12], [11, 13]]  # each piece keeps its seed
    # And the track is the one rendered in written order, piece for piece
    assert [p["seed"] for p in together.pieces] == [10, 11, 12, 13]
    np.testing.assert_array_equal(together.samples, as_written.samples)


def test_progress_only_moves_forward_and_ends_complete() -> None:
    # Given a three-batch render that reports progress
    reports: list[ProgressReport] = []
    control = RenderControl(on_progress=reports.append)
    # When it renders
    render(FakePipeline(), _request("A b. " * 60), None, batch_size=1, control=control, max_piece_bytes=100)
    # Then fraction, step and finished segments never go back, and the last report is complete
    for before, after in zip(reports, reports[1:], strict=False):
        assert after.fraction >= before.fraction and after.step >= before.step
        assert after.segments_done >= before.segments_done
    last = reports[-1]
    assert last.fraction == 1.0 and last.segments_done == last.segments_total == 3 and last.step == last.total_steps


def test_a_cancel_seen_between_steps_stops_the_render() -> None:
    # Given a cancel flag that turns on after the first poll
    polls = iter([False, False, True])
    control = RenderControl(cancel_requested=lambda: next(polls, True), poll_s=0)
    pipeline = FakePipeline()
    # When it renders, Then it stops with RenderCancelled during the first batch
    with pytest.raises(RenderCancelled):
        render(pipeline, _request("A b. " * 60), None, batch_size=1, control=control, max_piece_bytes=100)
    assert len(pipeline.calls) == 1


def test_a_cancel_before_start_renders_nothing() -> None:
    pipeline = FakePipeline()
    with pytest.raises(RenderCancelled):
        render(pipeline, _request(), None, control=RenderControl(cancel_requested=lambda: True))
    assert pipeline.calls == []


def test_a_passed_deadline_stops_the_render_as_a_time_limit() -> None:
    # Given a clock already past the deadline
    control = RenderControl(deadline=5.0, clock=lambda: 6.0)
    # Then the render stops naming the time limit
    with pytest.raises(RenderTimeLimit):
        render(FakePipeline(), _request(), None, control=control)


def test_whitespace_only_text_is_invalid_input() -> None:
    # Given text with nothing to say, Then rendering refuses it as invalid input
    with pytest.raises(InvalidInput):
        render(FakePipeline(), SynthesisRequest(job_id="j", text="   ", seed=1), None)


@pytest.mark.parametrize("fmt", ["wav", "flac", "pcm"])
def test_the_stitched_track_encodes_to_the_asked_format(fmt: str) -> None:
    # Given a rendered track
    rendered = render(FakePipeline(), _request(), None)
    # When it is encoded
    data = encode_output(rendered, fmt, 24000 if fmt != "pcm" else None)
    # Then the bytes look like the format
    expected = {"wav": b"RIFF", "flac": b"fLaC"}.get(fmt)
    assert data[:4] == expected if expected else len(data) == 2 * rendered.samples.shape[0]


# --- streamed renders: each piece's share of the track, as soon as it is rendered ---------------------

LONG = " ".join(f"Sentence number {i} of a longer answer, said at an easy pace." for i in range(20))


def test_a_streamed_render_sends_chunks_in_order_that_add_up_to_the_stored_track() -> None:
    # Given a long text rendered with a chunk sink (batches of 4)
    pipeline, chunks = FakePipeline(), []
    rendered = render(
        pipeline, _request(LONG), None, batch_size=4, pause_s=0.25, on_chunk=lambda i, s, r: chunks.append((i, s, r))
    )
    # Then every piece gave one chunk, in order, at the model's rate
    assert [i for i, _, _ in chunks] == list(range(len(rendered.pieces)))
    assert {r for _, _, r in chunks} == {RATE}
    # and the chunks put together are the joined track, sample for sample
    assert np.array_equal(np.concatenate([s for _, s, _ in chunks]), rendered.samples)


def test_a_streamed_render_renders_a_short_first_piece_alone_before_batching_the_rest() -> None:
    # Given the same long text, once streamed and once not
    streamed, plain = FakePipeline(), FakePipeline()
    render(streamed, _request(LONG), None, batch_size=4, on_chunk=lambda *_: None)
    render(plain, _request(LONG), None, batch_size=4)
    # Then the streamed render's first sampler call is one short piece (first audio comes fast)
    first_texts = streamed.calls[0][0]
    assert len(first_texts) == 1 and len(first_texts[0].encode()) <= FIRST_PIECE_BYTES
    assert all(len(texts) <= 4 for texts, _, _ in streamed.calls[1:])
    # and both renders speak the whole text exactly once, in order
    assert "".join(t for texts, _, _ in streamed.calls for t in texts) == LONG
    assert "".join(t for texts, _, _ in plain.calls for t in texts) == LONG
    # while the render that is not streamed keeps its first piece full
    assert len(plain.calls[0][0][0].encode()) > FIRST_PIECE_BYTES


def test_track_chunks_drop_an_empty_piece_with_its_pause_as_join_segments_does() -> None:
    # Given pieces where the middle one rendered to nothing
    pieces = [np.full(100, 0.5, np.float32), np.zeros(0, np.float32), np.full(80, -0.25, np.float32)]
    chunks = TrackChunks(1000, pause_s=0.05)
    # When they are cut one by one
    parts = [chunks.add(p) for p in pieces]
    # Then the empty one is an empty chunk and the whole equals the joined track
    assert parts[1].size == 0
    assert np.array_equal(np.concatenate(parts), join_segments(pieces, 1000, pause_s=0.05))


def test_plan_pieces_cuts_the_first_piece_short_only_when_asked_and_keeps_every_character() -> None:
    # Given a long text
    # When it is planned for a stream and normally
    streamed = plan_pieces(LONG, first_bytes=FIRST_PIECE_BYTES)
    plain = plan_pieces(LONG)
    # Then both cover the text exactly; only the streamed plan starts short
    assert "".join(streamed) == LONG == "".join(plain)
    assert len(streamed[0].encode()) <= FIRST_PIECE_BYTES < len(plain[0].encode())
    # and a text that fits the first piece is one piece either way
    assert plan_pieces("Hello there.", first_bytes=FIRST_PIECE_BYTES) == ["Hello there."]


def test_plan_batches_puts_the_lead_piece_alone_then_batches_of_the_given_size() -> None:
    assert plan_batches(6, 4) == [range(0, 4), range(4, 6)]
    assert plan_batches(6, 4, lead=1) == [range(0, 1), range(1, 5), range(5, 6)]
    assert plan_batches(1, 4, lead=1) == [range(0, 1)]


# --- kept pieces: a repeated delivery renders only what the last one did not finish ---------------------


@dataclass
class DyingPipeline(FakePipeline):
    """Renders like FakePipeline, then fails on sampler call number ``dies_at`` (a worker lost mid-job)."""

    dies_at: int = 2

    def synthesize_batch(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> list[FakeResult]:
        if len(self.calls) + 1 == self.dies_at:
            raise RuntimeError("the worker is gone")
        return super().synthesize_batch(texts, *args, **kwargs)


def _kept(tmp_path: Path, request: SynthesisRequest) -> JobPieces:
    return JobPieces(LocalStorage(tmp_path), request, "fake-rev")


def test_a_repeated_delivery_renders_only_the_pieces_the_lost_one_did_not_keep(tmp_path: Path) -> None:
    # Given a long job in three batches whose first delivery dies in its second sampler call
    request = _request(LONG, job_id="job_kept")
    with pytest.raises(RuntimeError):
        render(
            DyingPipeline(dies_at=2), request, None, batch_size=4, max_piece_bytes=150, kept=_kept(tmp_path, request)
        )
    # When the job is delivered again (a fresh process: a new pipeline, the same storage)
    second, clean = FakePipeline(), FakePipeline()
    again = render(second, request, None, batch_size=4, max_piece_bytes=150, kept=_kept(tmp_path, request))
    whole = render(clean, request, None, batch_size=4, max_piece_bytes=150)
    # Then the first batch's pieces came from storage and only the others were rendered
    assert sum(len(texts) for texts, _, _ in second.calls) == len(again.pieces) - 4
    assert [p.get("kept", False) for p in again.pieces] == [True] * 4 + [False] * (len(again.pieces) - 4)
    # and the track is the one an uninterrupted render makes, sample for sample
    assert np.array_equal(again.samples, whole.samples)


def test_pieces_are_kept_only_across_batches_and_only_for_the_same_settings(tmp_path: Path) -> None:
    # Given a one-batch job and a long job, both rendered with a keeper
    short = _request("One sentence. And another.", job_id="job_short")
    render(FakePipeline(), short, None, batch_size=4, kept=_kept(tmp_path, short))
    long = _request(LONG, job_id="job_long")
    render(FakePipeline(), long, None, batch_size=4, max_piece_bytes=150, kept=_kept(tmp_path, long))
    # Then the one-batch job kept nothing (one sampler call: nothing to resume between)
    storage = LocalStorage(tmp_path)
    assert storage.list_keys(job_pieces_prefix("job_short")) == []
    assert len(storage.list_keys(job_pieces_prefix("job_long"))) > 4
    # When the long job runs again with another seed, Then no piece is reused
    reseeded = render(
        FakePipeline(), _request(LONG, job_id="job_long", seed=99), None, batch_size=4, max_piece_bytes=150,
        kept=_kept(tmp_path, _request(LONG, job_id="job_long", seed=99)),
    )  # fmt: skip
    assert not any(p.get("kept") for p in reseeded.pieces)
    # and clearing removes every kept piece of the job
    clear_pieces(storage, "job_long")
    assert storage.list_keys(job_pieces_prefix("job_long")) == []
