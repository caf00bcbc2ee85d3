"""Fitted canvases: the bucket a text gets, retries when the end of speech lies past the canvas,
and fixed mode unchanged (echo_tts.canvas + Pipeline(canvas=...))."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import echo_tts.pipeline as pipeline_module
from echo_tts.canvas import (
    CANVAS_BUCKETS,
    CanvasPolicy,
    canvas_policy,
    speech_ends_inside,
    spoken_bytes,
)
from echo_tts.config import AE_DOWNSAMPLE_FACTOR, DEFAULT_PRESET, FLATTEN_WINDOW, sampler_preset
from echo_tts.errors import Cancelled, InvalidInput
from echo_tts.pipeline import Pipeline
from echo_tts.sampler import encode_conditioning, find_flattening_point, sample
from echo_tts.speaker import SpeakerLatents, batch_speakers, empty_speaker
from echo_tts.text import encode_texts

SENTENCE = "Hello there, this is a short test sentence."
DEFAULT = sampler_preset(DEFAULT_PRESET)  # 40 steps: the tiny model's speech ends inside the canvas
FAST = DEFAULT.replace(num_steps=8)  # for tests that decide the end of speech themselves
AUTO = CanvasPolicy(mode="auto")

pytestmark = pytest.mark.usefixtures("one_thread")


def prose(nbytes: int) -> str:
    words = "the quick brown fox jumps over a lazy dog while seven old men sing ".split()
    text = ""
    while len(text) < nbytes:
        text += words[len(text) % len(words)] + " "
    return text[:nbytes]


# --- choosing the canvas ------------------------------------------------------------------------
def test_the_bucket_grows_with_the_text_and_never_passes_640():
    # When texts of 0 to 760 bytes get their first canvas
    lengths = list(range(0, 761, 5))
    canvases = [AUTO.first_canvas(prose(n)) for n in lengths]
    # Then the canvas never shrinks as the text grows, is always a bucket, and never passes 640
    assert canvases == sorted(canvases)
    assert set(canvases) <= set(CANVAS_BUCKETS) and max(canvases) == 640
    # And it always holds the estimate (speech with its margin plus the flat window) until the cap
    for n, canvas in zip(lengths, canvases, strict=True):
        assert canvas >= AUTO.estimate_latents(prose(n)) or canvas == 640
    # And a word gets the smallest bucket, a 300-byte book piece 512, a full generation 640
    assert AUTO.first_canvas("Hi.") == 128
    assert AUTO.first_canvas(prose(300)) == 512 and AUTO.first_canvas(prose(760)) == 640
    assert canvases[0] == 128 and len(set(canvases)) == len(CANVAS_BUCKETS)


def test_the_estimate_counts_spoken_bytes_at_the_stated_rate():
    # Speaker tags and outer whitespace are not spoken; other scripts count their UTF-8 bytes
    assert spoken_bytes("[S1] Hello there. [S2] Hi! ") == spoken_bytes("Hello there.  Hi!") == 17
    assert spoken_bytes("Привет") == 12
    # 15 bytes a second x 1.12 margin at 21.5 frames a second, plus the 20-frame flat window
    assert AUTO.estimate_latents("x" * 150) == 242 + FLATTEN_WINDOW
    assert AUTO.first_canvas("[S1] " + prose(100)) == AUTO.first_canvas(prose(100))


def test_a_shorter_sequence_length_caps_the_ladder_and_fixed_uses_it_alone():
    # With a 576-frame cap (a low-memory profile), auto climbs to 576 and fixed renders 576
    assert AUTO.ladder(576) == (128, 192, 256, 320, 384, 448, 512, 576)
    assert AUTO.first_canvas(prose(700), cap=576) == 576
    assert [AUTO.next_canvas(n, 576) for n in (128, 512, 576)] == [192, 576, None]
    assert AUTO.ladder(100) == (100,) and AUTO.first_canvas("Hi.", cap=100) == 100
    fixed = CanvasPolicy()
    assert fixed.mode == "fixed" and fixed.ladder() == (640,) and fixed.first_canvas("Hi.") == 640
    assert fixed.next_canvas(640) is None


def test_the_end_of_speech_counts_only_with_its_whole_flat_window_inside():
    assert speech_ends_inside(108, 128) and not speech_ends_inside(109, 128)
    assert not speech_ends_inside(128, 128)  # no window qualified at all


def test_unknown_canvas_modes_and_bad_buckets_are_refused(pipe):
    assert canvas_policy("AUTO") == AUTO and canvas_policy(AUTO) is AUTO
    with pytest.raises(InvalidInput, match="fixed, auto"):
        canvas_policy("huge")
    with pytest.raises(InvalidInput, match="ascending"):
        CanvasPolicy(mode="auto", buckets=(256, 128))
    with pytest.raises(InvalidInput, match="canvas"):
        pipe.synthesize(SENTENCE, None, FAST, canvas="sometimes")


# --- fixed: as before -----------------------------------------------------------------------------
def test_fixed_is_the_default_and_renders_exactly_as_the_upstream_canvas(checkpoint, pipe):
    # Given the latents the sampler makes on the full 640-frame canvas
    cond = encode_conditioning(pipe.model, encode_texts([SENTENCE]), *batch_speakers([empty_speaker()]))
    latents = sample(pipe.model, cond, DEFAULT, seeds=[2])
    point = find_flattening_point(latents[0])
    expected = pipe.decode_latents(latents[:, :point])[0].numpy()
    # When the sentence renders by default and with canvas="fixed"
    default = pipe.synthesize(SENTENCE, None, DEFAULT, seed=2)
    fixed = pipe.synthesize(SENTENCE, None, DEFAULT, seed=2, canvas="fixed")
    # Then both are that crop, bit for bit, and say so
    assert pipe.canvas.mode == "fixed"
    for result in (default, fixed):
        assert np.array_equal(result.samples, expected)
        assert result.metadata["canvas"] == "fixed"
        assert result.metadata["canvas_latents"] == 640 and result.metadata["canvas_retries"] == 0
    # And from_pretrained takes the default policy
    auto = Pipeline.from_pretrained(
        checkpoint / "echo-tts-base", checkpoint / "fish-s1-dac-min", dtype="float32", canvas="auto"
    )
    assert auto.canvas == AUTO


# --- auto: retries never cut speech --------------------------------------------------------------
class SamplerSpy:
    """Wraps the pipeline's ``sample``: records each call's canvas length and seeds."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int]]] = []

    def __call__(self, model, cond, config, **kwargs):
        self.calls.append((config.sequence_length, list(kwargs["seeds"])))
        return sample(model, cond, config, **kwargs)


def late_end(frame: int):
    """A flattening-point finder whose speech always ends at ``frame``: a canvas shorter than
    ``frame + 20`` has no flat tail (the speech runs to its end), a longer one ends at ``frame``."""

    def find(latents: torch.Tensor) -> int:
        length = latents.shape[0]
        return frame if frame + FLATTEN_WINDOW <= length else length

    return find


def direct_render(pipe, text: str, speaker, config, seed: int, length: int, point: int) -> np.ndarray:
    """The audio of one sampler call on a canvas of ``length`` frames, cropped at ``point``."""
    cond = encode_conditioning(pipe.model, encode_texts([text]), *batch_speakers([speaker or empty_speaker()]))
    latents = sample(pipe.model, cond, config.replace(sequence_length=length), seeds=[seed])
    return pipe.decode_latents(latents[:, :point])[0].numpy()


def test_auto_renders_again_with_the_next_bucket_when_speech_runs_past_the_canvas(pipe, monkeypatch):
    # Given speech that ends at frame 300 (13.9 s) while the text asks for the 128 bucket (5.9 s)
    spy = SamplerSpy()
    monkeypatch.setattr(pipeline_module, "sample", spy)
    monkeypatch.setattr(pipeline_module, "find_flattening_point", late_end(300))
    assert AUTO.first_canvas(SENTENCE) == 128
    # When it renders with an auto canvas
    result = pipe.synthesize(SENTENCE, None, FAST, seed=7, canvas="auto")
    # Then each canvas without the end of speech was rendered again, same seed, one bucket up
    assert spy.calls == [(128, [7]), (192, [7]), (256, [7]), (320, [7])]
    meta = result.metadata
    assert meta["canvas"] == "auto" and meta["canvas_latents"] == 320 and meta["canvas_retries"] == 3
    # And no speech is cut: the audio runs to frame 300, exactly the render on the 320 canvas
    assert meta["num_latents"] == 300 and result.samples.shape[0] == 300 * AE_DOWNSAMPLE_FACTOR
    assert np.array_equal(result.samples, direct_render(pipe, SENTENCE, None, FAST, 7, 320, 300))


def test_speech_that_never_ends_climbs_to_640_and_renders_as_fixed(pipe, monkeypatch):
    # Given latents that never flatten
    spy = SamplerSpy()
    monkeypatch.setattr(pipeline_module, "sample", spy)
    monkeypatch.setattr(pipeline_module, "find_flattening_point", lambda latents: latents.shape[0])
    # When a word renders with an auto canvas, and with the fixed canvas
    auto = pipe.synthesize("Hi.", None, FAST, seed=4, canvas="auto")
    fixed = pipe.synthesize("Hi.", None, FAST, seed=4, canvas="fixed")
    # Then auto went through every bucket and its last render is the fixed one, bit for bit
    assert [length for length, _ in spy.calls] == [*CANVAS_BUCKETS, 640]
    assert auto.metadata["canvas_latents"] == 640 and auto.metadata["canvas_retries"] == len(CANVAS_BUCKETS) - 1
    assert np.array_equal(auto.samples, fixed.samples) and auto.samples.shape[0] == 640 * AE_DOWNSAMPLE_FACTOR
    # And a smaller sequence_length caps the climb
    spy.calls.clear()
    capped = pipe.synthesize("Hi.", None, FAST.replace(sequence_length=256), seed=4, canvas="auto")
    assert [length for length, _ in spy.calls] == [128, 192, 256] and capped.metadata["canvas_latents"] == 256


def test_the_tiny_models_late_end_is_retried_and_kept_whole_and_reproducible(pipe):
    # Given a word: the estimate asks for 128 frames, the tiny model speaks longer than that
    # When it renders twice with an auto canvas
    first = pipe.synthesize("Hi.", None, DEFAULT, seed=1, canvas="auto")
    again = pipe.synthesize("Hi.", None, DEFAULT, seed=1, canvas="auto")
    meta = first.metadata
    # Then it was retried to a canvas that holds its end of speech with the whole flat window
    assert meta["canvas_retries"] >= 1 and meta["canvas_latents"] > 128
    assert speech_ends_inside(meta["num_latents"], meta["canvas_latents"])
    # And it is the crop of one render on that canvas with its seed, the same every time
    expected = direct_render(pipe, "Hi.", None, DEFAULT, 1, meta["canvas_latents"], meta["num_latents"])
    assert np.array_equal(first.samples, expected) and np.array_equal(first.samples, again.samples)
    assert again.metadata == meta


@pytest.fixture(scope="module")
def voice(pipe) -> SpeakerLatents:
    rendered = pipe.synthesize(SENTENCE, None, DEFAULT, seed=0)
    return pipe.encode_speaker(torch.from_numpy(rendered.samples)[None])


def test_a_batched_auto_render_equals_one_at_a_time(pipe, voice):
    # Given items with different buckets, a voice on one, and a Pipeline whose default is auto
    texts, speakers, seeds = ["Hi.", SENTENCE, prose(200)], [None, voice, None], [5, 9, 5]
    auto_pipe = Pipeline(pipe.model, pipe.autoencoder, pipe.pca, model_revision=pipe.model_revision, canvas="auto")
    # When they render as a batch and one by one
    steps: list[tuple[int, int]] = []
    batch = auto_pipe.synthesize_batch(texts, speakers, DEFAULT, seeds, progress=lambda *report: steps.append(report))
    alone = [auto_pipe.synthesize(t, s, DEFAULT, seed=n) for t, s, n in zip(texts, speakers, seeds, strict=True)]
    # Then each item got its own canvas, retries and crop, and the same samples as alone
    assert len({r.metadata["canvas_latents"] for r in batch}) > 1
    for together, single in zip(batch, alone, strict=True):
        for key in ("canvas", "canvas_latents", "canvas_retries", "num_latents", "seed"):
            assert together.metadata[key] == single.metadata[key], key
        np.testing.assert_allclose(together.samples, single.samples, atol=2e-4)
    # And progress counted every step of every sampler call, never going back
    done = [step for step, _ in steps]
    assert done == list(range(1, len(steps) + 1)) and steps[-1][0] == steps[-1][1]
    assert all(total % DEFAULT.num_steps == 0 for _, total in steps)


def test_a_cancel_stops_an_auto_render(pipe):
    done: list[int] = []
    with pytest.raises(Cancelled):
        pipe.synthesize(
            SENTENCE,
            None,
            FAST,
            0,
            progress=lambda step, _: done.append(step),
            should_cancel=lambda: len(done) >= 3,
            canvas="auto",
        )
    assert done == [1, 2, 3]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_canvases_replay_from_cuda_graphs_like_eager(checkpoint):
    # Given the tiny checkpoint on CUDA with and without CUDA graphs, auto canvases by default
    paths = (checkpoint / "echo-tts-base", checkpoint / "fish-s1-dac-min")
    graphed = Pipeline.from_pretrained(*paths, device="cuda", canvas="auto")
    eager = Pipeline.from_pretrained(*paths, device="cuda", canvas="auto", cuda_graphs=False)
    texts, seeds = ["Hi.", SENTENCE, prose(200)], [5, 9, 5]
    # When a batch with retries renders both ways
    with_graphs = graphed.synthesize_batch(texts, None, DEFAULT, seeds)
    without = eager.synthesize_batch(texts, None, DEFAULT, seeds)
    # Then every canvas length replays to the same audio, and speech ends inside each canvas
    for a, b in zip(with_graphs, without, strict=True):
        assert a.metadata == b.metadata and np.array_equal(a.samples, b.samples)
        assert a.metadata["canvas_latents"] == 640 or speech_ends_inside(
            a.metadata["num_latents"], a.metadata["canvas_latents"]
        )
