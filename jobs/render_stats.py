"""Render statistics the workers record in Redis and the API reports on ``/metrics``.

Every worker process adds to the same Redis hashes, so a reader sees the totals over all workers
(and they survive worker restarts). One observation is one ``MULTI``/``EXEC`` pipeline: a scrape never
sees a histogram's count without its sum or buckets.

Layout (``{p}`` is the key prefix):

- ``{p}:metrics:render_seconds`` and ``{p}:metrics:render_rtf``: histograms, one hash each, fields
  ``le:<bound>`` → observations ≤ that bound (cumulative, as Prometheus reports them; ``le:+Inf`` is
  every observation), ``sum`` → the sum of the observed values, ``count`` → observations.
  ``render_seconds`` observes each finished job's model time (``timings.model_s``: text to samples, not
  encoding or upload); ``render_rtf`` the same time divided by the audio's duration (the real-time
  factor, as ``timings.rtf`` and the benchmarks define it: below 1 is faster than real time).
- ``{p}:metrics:segments_rendered`` field ``kind`` → generations rendered by the model: ``job`` (a job's
  pieces) and ``book`` (audiobook segments; those found in the segment cache are not rendered).
- ``{p}:metrics:segment_cache`` fields ``hits`` / ``misses``: book segments looked up in the segment
  cache (``cache/segments/{digest}.flac``) and found there, or not (then rendered).

The bucket bounds are part of the layout: changing them needs new key names (old hashes would report
wrong cumulative counts under the new bounds).

Recording is best effort: a Redis error is logged and dropped (a job's outcome never depends on its
statistics). Reading raises ``redis.RedisError`` for the caller (``/metrics`` then says Redis is down).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

log = logging.getLogger(__name__)

# A job's model time: a sentence on a GPU takes ~0.1 s, the longest job runs up to the 10-minute limit.
RENDER_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Model seconds per second of audio: ~0.04 for the full model on an H100, ~1 for the tiny one on a CPU.
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
SEGMENT_KINDS = ("job", "book")


@dataclass(frozen=True)
class Histogram:
    """One histogram as read: cumulative counts per bound (``+Inf`` last), the sum and the count."""

    buckets: tuple[tuple[float, int], ...]
    sum: float
    count: int


@dataclass(frozen=True)
class RenderSnapshot:
    render_seconds: Histogram
    realtime_factor: Histogram
    segments: dict[str, int]  # kind -> generations rendered (every kind of SEGMENT_KINDS present)
    cache_hits: int
    cache_misses: int


def _field(bound: float) -> str:
    return "le:+Inf" if math.isinf(bound) else f"le:{bound!r}"


class RenderStats:
    """The shared render counters; ``client`` must use ``decode_responses=True``."""

    def __init__(self, client: Any, *, prefix: str = "echo") -> None:
        self.r = client
        self.seconds_key = f"{prefix}:metrics:render_seconds"
        self.rtf_key = f"{prefix}:metrics:render_rtf"
        self.segments_key = f"{prefix}:metrics:segments_rendered"
        self.cache_key = f"{prefix}:metrics:segment_cache"

    # -- recording (workers) ---------------------------------------------------------------------
    def job_rendered(self, result: Mapping[str, Any], timings: Mapping[str, Any]) -> None:
        """A job succeeded: observe its model time and real-time factor, count its pieces.

        ``result``/``timings`` are the job's own (``result.duration_s``, ``result.pieces``,
        ``timings.model_s``); a job without a model time (finished from storage) observes nothing."""
        model_s = float(timings.get("model_s") or 0.0)
        audio_s = float(result.get("duration_s") or 0.0)
        pieces = result.get("pieces")
        if model_s <= 0:
            return
        pipe = self.r.pipeline(transaction=True)
        _observe(pipe, self.seconds_key, RENDER_SECONDS_BUCKETS, model_s)
        if audio_s > 0:
            _observe(pipe, self.rtf_key, RTF_BUCKETS, model_s / audio_s)
        if isinstance(pieces, Sequence) and pieces:
            pipe.hincrby(self.segments_key, "job", len(pieces))
        self._execute(pipe, "a job's render")

    def book_segments_rendered(self, n: int) -> None:
        """``n`` audiobook segments came out of the model (and went into the segment cache)."""
        if n > 0:
            pipe = self.r.pipeline(transaction=True)
            pipe.hincrby(self.segments_key, "book", n)
            self._execute(pipe, "rendered book segments")

    def segment_cache_lookups(self, *, hits: int, misses: int) -> None:
        """Book segments looked up in the segment cache: ``hits`` were there, ``misses`` were not."""
        if hits > 0 or misses > 0:
            pipe = self.r.pipeline(transaction=True)
            pipe.hincrby(self.cache_key, "hits", hits)
            pipe.hincrby(self.cache_key, "misses", misses)
            self._execute(pipe, "segment cache lookups")

    @staticmethod
    def _execute(pipe: Any, what: str) -> None:
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("render statistics not recorded (%s): %s", what, exc)

    # -- reading (the API) -----------------------------------------------------------------------
    def read(self) -> RenderSnapshot:
        """Everything in one round trip (raises ``redis.RedisError``)."""
        pipe = self.r.pipeline(transaction=False)
        for key in (self.seconds_key, self.rtf_key, self.segments_key, self.cache_key):
            pipe.hgetall(key)
        seconds, rtf, segments, cache = pipe.execute()
        kinds = {kind: 0 for kind in SEGMENT_KINDS} | {k: int(v) for k, v in segments.items()}
        return RenderSnapshot(
            render_seconds=_histogram(seconds, RENDER_SECONDS_BUCKETS),
            realtime_factor=_histogram(rtf, RTF_BUCKETS),
            segments=kinds,
            cache_hits=int(cache.get("hits", 0)),
            cache_misses=int(cache.get("misses", 0)),
        )


def _observe(pipe: Any, key: str, bounds: Sequence[float], value: float) -> None:
    for bound in (*bounds, math.inf):
        if value <= bound:
            pipe.hincrby(key, _field(bound), 1)
    pipe.hincrbyfloat(key, "sum", value)
    pipe.hincrby(key, "count", 1)


def _histogram(fields: Mapping[str, str], bounds: Sequence[float]) -> Histogram:
    buckets = tuple((bound, int(fields.get(_field(bound), 0))) for bound in (*bounds, math.inf))
    return Histogram(buckets=buckets, sum=float(fields.get("sum", 0.0)), count=int(fields.get("count", 0)))
