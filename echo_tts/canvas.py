"""Canvas policy: how many latent frames one generation samples.

Upstream samples ``sequence_length`` = 640 frames (29.7 s) whatever the text and crops the audio
at the end-of-speech flattening point (spec §6.7); a 3 s sentence pays for 29.7 s of sampling.

* ``"fixed"`` (the default): every generation samples ``config.sequence_length`` frames, as
  upstream.
* ``"auto"``: each text gets a fitted canvas. Its speech duration is estimated from its UTF-8
  bytes at :data:`SPEECH_BYTES_PER_SECOND`, times :data:`CANVAS_MARGIN`, plus the
  :data:`~echo_tts.config.FLATTEN_WINDOW` frames of flat tail the end-of-speech scan needs; the
  frame count is rounded **up** to the first of :data:`CANVAS_BUCKETS` that holds it (few fixed
  shapes, so CUDA graphs, compiled kernels and batches are reused), capped at
  ``config.sequence_length``. A canvas too short for the speech gets the *prefix* of the utterance
  that fits (spec §4.4) and no flat tail: when the end of speech is not inside the canvas
  (:func:`speech_ends_inside`), the item renders again, same seed, with the next bucket up, up to
  the cap, which behaves as ``"fixed"``. No speech is ever cut.

This module is torch-free, so service settings can import and validate it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .config import AE_DOWNSAMPLE_FACTOR, FLATTEN_WINDOW, MAX_SEQUENCE_LENGTH, SAMPLE_RATE
from .errors import InvalidInput

__all__ = [
    "CANVAS_BUCKETS",
    "CANVAS_MARGIN",
    "CANVAS_MODES",
    "LATENTS_PER_SECOND",
    "SPEECH_BYTES_PER_SECOND",
    "CanvasPolicy",
    "canvas_policy",
    "speech_ends_inside",
    "spoken_bytes",
]

CANVAS_MODES = ("fixed", "auto")
LATENTS_PER_SECOND = SAMPLE_RATE / AE_DOWNSAMPLE_FACTOR  # 21.533 latent frames per second of audio
# Multiples of 64 (GPU-friendly tiles; the sampler itself needs no divisibility, only the blockwise
# buffer must be a multiple of 4) from 5.9 s up; 576 is left out: it saves 10 % over 640 for the
# few texts that would need it. 8 shapes, so graphs and compiled kernels stay reusable.
CANVAS_BUCKETS = (128, 192, 256, 320, 384, 448, 512, 640)
# English read at the service's assumed pace: 300 bytes ~ 20 s (also the ~1.435 latents per byte
# an independent port measured on the real model, spec §8: 21.533 / 1.435 = 15.0 bytes/s).
SPEECH_BYTES_PER_SECOND = 15.0
# Headroom over that estimate: the canvas holds speech as slow as 15 / 1.12 = 13.4 bytes/s
# (~145 words a minute), before the bucket rounding adds more. Larger margins waste canvas on
# every text; smaller ones make retries (each a whole wasted render) common. 1.12 is the largest
# that keeps a full 300-byte book piece in the 512 bucket.
CANVAS_MARGIN = 1.12

_SPEAKER_TAG = re.compile(r"\[S\d+\]")


def spoken_bytes(text: str) -> int:
    """UTF-8 bytes of the text that is spoken: speaker tags (``[S1]``, ``[S2]``) and the
    whitespace around the text are not. Other scripts count more bytes per character than
    English, which errs towards a longer canvas."""
    return len(_SPEAKER_TAG.sub("", text).strip().encode("utf-8"))


def speech_ends_inside(point: int, length: int) -> bool:
    """Whether the end of speech found at ``point`` lies inside a canvas of ``length`` frames:
    the whole flat window starting there must be generated frames, not the zero frames the scan
    appends (a point in the last ``FLATTEN_WINDOW`` frames, or ``length`` itself when no window
    qualified, means the speech may run on past the canvas)."""
    return point + FLATTEN_WINDOW <= length


@dataclass(frozen=True)
class CanvasPolicy:
    """How generations choose their canvas; see the module docstring.

    ``mode``: ``"fixed"`` or ``"auto"``; the other fields tune ``"auto"`` only: ``buckets``
    (ascending canvas lengths), ``bytes_per_second`` (speaking-rate estimate) and ``margin``
    (multiplies the estimated duration).
    """

    mode: str = "fixed"
    buckets: tuple[int, ...] = CANVAS_BUCKETS
    bytes_per_second: float = SPEECH_BYTES_PER_SECOND
    margin: float = CANVAS_MARGIN

    def __post_init__(self) -> None:
        if self.mode not in CANVAS_MODES:
            raise InvalidInput(f"unknown canvas mode {self.mode!r}; choose from {', '.join(CANVAS_MODES)}")
        buckets = tuple(int(b) for b in self.buckets)
        if not buckets or any(b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
            raise InvalidInput(f"canvas buckets must be distinct positive lengths in ascending order, got {buckets}")
        object.__setattr__(self, "buckets", buckets)
        if not self.bytes_per_second > 0 or not self.margin > 0:
            raise InvalidInput("canvas bytes_per_second and margin must be > 0")

    @property
    def auto(self) -> bool:
        return self.mode == "auto"

    def estimate_latents(self, text: str) -> int:
        """Frames the text needs: its estimated speech (with the margin) plus the flat window."""
        seconds = spoken_bytes(text) / self.bytes_per_second * self.margin
        return math.ceil(seconds * LATENTS_PER_SECOND) + FLATTEN_WINDOW

    def ladder(self, cap: int = MAX_SEQUENCE_LENGTH) -> tuple[int, ...]:
        """The canvas lengths ``"auto"`` may use under ``cap`` (``config.sequence_length``): the
        buckets below it, then ``cap`` itself. ``"fixed"`` uses ``cap`` alone."""
        if not self.auto:
            return (cap,)
        return (*(b for b in self.buckets if b < cap), cap)

    def first_canvas(self, text: str, cap: int = MAX_SEQUENCE_LENGTH) -> int:
        """The canvas a text renders with first: ``cap`` when fixed, else the smallest length of
        :meth:`ladder` that holds :meth:`estimate_latents` (``cap`` if none does)."""
        need = self.estimate_latents(text) if self.auto else cap
        return next((length for length in self.ladder(cap) if length >= need), cap)

    def next_canvas(self, length: int, cap: int = MAX_SEQUENCE_LENGTH) -> int | None:
        """The canvas to retry with after ``length`` held no end of speech; None at the cap."""
        return next((bigger for bigger in self.ladder(cap) if bigger > length), None)


def canvas_policy(value: str | CanvasPolicy) -> CanvasPolicy:
    """A :class:`CanvasPolicy` from itself or a mode name (``"fixed"``/``"auto"``, any case)."""
    if isinstance(value, CanvasPolicy):
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"canvas must be 'fixed', 'auto' or a CanvasPolicy, got {type(value).__name__}")
    return CanvasPolicy(mode=value.strip().lower())
