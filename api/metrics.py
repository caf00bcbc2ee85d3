"""Prometheus metrics: one custom collector (``prometheus_client``) over numbers kept in Redis.

What ``GET /metrics`` reports and where each number comes from:

- ``echo_queue_depth{queue}``: messages waiting in each Celery queue (kombu's Redis lists, all
  priority levels); ``echo_unacked_messages``: messages a worker took and has not acknowledged yet.
- ``echo_jobs{state}``: jobs queued and running now; ``echo_jobs_finished_total{state}``: jobs that
  reached each final state. Both come from the job store's counters, which the same atomic scripts
  that move a job keep (``JobStore.counts_by_state``): a scrape reads one hash, however many jobs.
- ``echo_workers_live``, ``echo_workers_busy``, ``echo_workers_live_by_queue{queue}``: worker
  heartbeats (written every 10 s, so ``busy`` may be up to 10 s stale).
- ``echo_api_requests_total{method,route,status}`` and ``echo_api_request_duration_seconds``: every API
  process counts in memory and adds its counts to Redis hashes about once a second, so the numbers are
  the sum over all API processes and replicas (not one gunicorn process's) and survive API restarts;
  a scrape may miss the other processes' last second. ``route`` is the URL rule (``/v1/jobs/<job_id>``),
  ``unmatched`` for unknown paths. Durations are to the response headers (not to the end of a stream).
- ``echo_render_seconds``, ``echo_render_realtime_factor`` (histograms per finished job),
  ``echo_segments_rendered_total{kind}``, ``echo_segment_cache_hits_total`` and
  ``echo_segment_cache_misses_total``: recorded by the workers in Redis (:mod:`jobs.render_stats`).
- ``echo_redis_up``, ``echo_build_info``, ``echo_api_process_start_time_seconds`` (this process).

Every number that is not about this process lives in Redis, so no ``prometheus_client`` multiprocess
directory is needed: whichever gunicorn process answers, it reads the same totals. Nothing here writes
job state, and nothing here knows a Redis key: the stores own their layouts.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from importlib import metadata

import redis
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from api.services import Services
from jobs import contract
from jobs.contract import TERMINAL_STATES, JobState
from jobs.render_stats import Histogram, RenderStats
from jobs.request_counts import RequestCounts

log = logging.getLogger(__name__)

# The classic text format (what generate_latest writes for our names, which all fit the legacy charset).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_FLUSH_EVERY_S = 1.0
_STARTED = time.time()


class RequestCounter:
    """Per-process request counts and durations, added to Redis hashes by a background thread."""

    def __init__(self, shared: RequestCounts) -> None:
        self.shared = shared
        self._lock = threading.Lock()
        self._counts: dict[str, int] = defaultdict(int)
        self._buckets: dict[str, int] = defaultdict(int)
        self._sums: dict[str, float] = defaultdict(float)
        self._pid: int | None = None  # the flusher runs in the process that counted (gunicorn forks)
        self._failing = False  # warn once per outage, not once a second

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        series = f"{method}|{route}"
        bucket = next((str(i) for i, bound in enumerate(BUCKETS) if seconds <= bound), "inf")
        with self._lock:
            self._counts[f"{series}|{status}"] += 1
            self._buckets[f"{series}|{bucket}"] += 1
            self._sums[series] += seconds
        if self._pid != os.getpid():
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="echo-metrics-flush", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(_FLUSH_EVERY_S)
            self.flush()

    def flush(self) -> None:
        """Add the counts of this process to Redis; on a Redis error they are kept for the next try."""
        with self._lock:
            counts, buckets, sums = self._counts, self._buckets, self._sums
            self._counts, self._buckets, self._sums = defaultdict(int), defaultdict(int), defaultdict(float)
        if not counts:
            return
        try:
            self.shared.add(counts, buckets, sums)
            if self._failing:
                self._failing = False
                log.info("metrics reach Redis again")
        except redis.RedisError as exc:
            if not self._failing:
                self._failing = True
                log.warning("metrics not flushed to Redis (kept for the next try): %s", exc)
            with self._lock:
                for field, n in counts.items():
                    self._counts[field] += n
                for field, n in buckets.items():
                    self._buckets[field] += n
                for field, total in sums.items():
                    self._sums[field] += total


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``0.005``, ``1.0``, ``+Inf``)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class EchoCollector(Collector):
    """Reads the service's numbers on each scrape (from Redis, except this process's own facts)."""

    def __init__(self, s: Services, counter: RequestCounter | None) -> None:
        self.s = s
        self.counter = counter

    def collect(self) -> Iterator[Metric]:
        """With Redis down, only this process's own facts and ``echo_redis_up 0``."""
        yield from self._build_info()
        if self.counter is not None:
            self.counter.flush()
        try:
            self.s.store.ping()
            up = 1
        except redis.RedisError:
            up = 0
        yield GaugeMetricFamily("echo_redis_up", "1 when this API process reaches Redis", value=up)
        if not up:
            return
        try:
            yield from self._queues()
            yield from self._workers()
            yield from self._jobs()
            yield from self._requests()
            yield from self._render()
        except redis.RedisError as exc:  # Redis went away mid-scrape: answer what was collected
            log.warning("metrics incomplete: %s", exc)

    def _build_info(self) -> Iterator[Metric]:
        try:
            version = metadata.version("echo-tts-service")
        except metadata.PackageNotFoundError:
            version = "unknown"
        info = GaugeMetricFamily(
            "echo_build_info", "Build of this API process (value is always 1)", labels=["version", "python", "storage"]
        )
        info.add_metric([version, platform.python_version(), self.s.storage.backend], 1)
        yield info
        yield GaugeMetricFamily(
            "echo_api_process_start_time_seconds", "Start time of this API process (epoch seconds)", value=_STARTED
        )

    def _queues(self) -> Iterator[Metric]:
        depths, unacked = self.s.store.queue_depths(contract.ALL_QUEUES)
        depth = GaugeMetricFamily(
            "echo_queue_depth", "Messages waiting in a Celery queue (not yet taken by a worker)", labels=["queue"]
        )
        for queue, n in depths.items():
            depth.add_metric([queue], n)
        yield depth
        yield GaugeMetricFamily(
            "echo_unacked_messages", "Messages taken by a worker and not yet acknowledged (all queues)", value=unacked
        )

    def _workers(self) -> Iterator[Metric]:
        beats = self.s.store.live_workers()
        per_queue: dict[str, int] = defaultdict(int)
        for beat in beats:
            for queue in beat.get("queues") or []:
                per_queue[str(queue)] += 1
        yield GaugeMetricFamily("echo_workers_live", "Workers with a live heartbeat", value=len(beats))
        yield GaugeMetricFamily(
            "echo_workers_busy",
            "Live workers rendering a job (heartbeat, up to 10 s stale)",
            value=sum(1 for b in beats if b.get("busy_job")),
        )
        by_queue = GaugeMetricFamily("echo_workers_live_by_queue", "Live workers consuming a queue", labels=["queue"])
        for queue in contract.ALL_QUEUES:
            by_queue.add_metric([queue], per_queue.get(queue, 0))
        yield by_queue

    def _jobs(self) -> Iterator[Metric]:
        counts = self.s.store.counts_by_state()
        live = GaugeMetricFamily("echo_jobs", "Jobs queued or running now", labels=["state"])
        finished = CounterMetricFamily("echo_jobs_finished_total", "Jobs that reached a final state", labels=["state"])
        for state in JobState:
            (finished if state in TERMINAL_STATES else live).add_metric([state.value], counts[state])
        yield live
        yield finished

    def _requests(self) -> Iterator[Metric]:
        counts, buckets, sums = self.s.request_counts.read()
        requests = CounterMetricFamily(
            "echo_api_requests_total",
            "API requests answered, over all API processes",
            labels=["method", "route", "status"],
        )
        for field, n in sorted(counts.items()):
            requests.add_metric(field.rsplit("|", 2), n)
        yield requests
        per_series: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        for field, n in buckets.items():
            series, bucket = field.rsplit("|", 1)
            per_series[series][len(BUCKETS) if bucket == "inf" else int(bucket)] += n
        durations = HistogramMetricFamily(
            "echo_api_request_duration_seconds",
            "Time to the response headers, over all API processes",
            labels=["method", "route"],
        )
        for series, row in sorted(per_series.items()):
            cumulative, running = [], 0
            for bound, n in zip((*BUCKETS, math.inf), row, strict=True):
                running += n
                cumulative.append((_le(bound), float(running)))
            durations.add_metric(series.split("|", 1), cumulative, sums.get(series, 0.0))
        yield durations

    def _render(self) -> Iterator[Metric]:
        snap = RenderStats(self.s.store.r, prefix=self.s.store.prefix).read()  # the job store's Redis
        yield _histogram(
            "echo_render_seconds",
            "Model time of each finished job (text to samples; not encoding or upload), over all workers",
            snap.render_seconds,
        )
        yield _histogram(
            "echo_render_realtime_factor",
            "Model seconds per second of audio of each finished job (below 1: faster than real time)",
            snap.realtime_factor,
        )
        segments = CounterMetricFamily(
            "echo_segments_rendered_total",
            "Generations rendered by the model: job pieces (kind=job) and audiobook segments (kind=book)",
            labels=["kind"],
        )
        for kind, n in sorted(snap.segments.items()):
            segments.add_metric([kind], n)
        yield segments
        yield CounterMetricFamily(
            "echo_segment_cache_hits_total",
            "Audiobook segments found in the segment cache (not rendered again)",
            value=snap.cache_hits,
        )
        yield CounterMetricFamily(
            "echo_segment_cache_misses_total",
            "Audiobook segments looked up in the segment cache and not found (then rendered)",
            value=snap.cache_misses,
        )


def _histogram(name: str, documentation: str, h: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=[(_le(bound), float(n)) for bound, n in h.buckets], sum_value=h.sum
    )


def registry(s: Services, counter: RequestCounter | None) -> CollectorRegistry:
    """A registry of its own (not the process-global one) holding only our collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(EchoCollector(s, counter))
    return reg


def render(reg: CollectorRegistry) -> bytes:
    """The whole exposition, in the classic text format."""
    return generate_latest(reg)
