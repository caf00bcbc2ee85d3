"""Prometheus metrics in the text exposition format (0.0.4), without a client library.

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
- ``echo_redis_up``, ``echo_build_info``, ``echo_api_process_start_time_seconds`` (this process).

Nothing here writes job state, and nothing here knows a Redis key: the stores own their layouts.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from importlib import metadata

import redis

from api.services import Services
from jobs import contract
from jobs.contract import TERMINAL_STATES, JobState
from jobs.request_counts import RequestCounts

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
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


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: Mapping[str, object], value: float) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    number = repr(float(value)) if isinstance(value, float) else str(value)
    return f"{name}{{{inner}}} {number}" if inner else f"{name} {number}"


class Exposition:
    """Collects metric families and renders them as Prometheus text."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Mapping[str, object], float]],
        *,
        sample_name: str | None = None,
    ) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.lines += [_sample(sample_name or name, labels, value) for labels, value in samples]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _build_info(out: Exposition, s: Services) -> None:
    try:
        version = metadata.version("echo-tts-service")
    except metadata.PackageNotFoundError:
        version = "unknown"
    labels = {"version": version, "python": platform.python_version(), "storage": s.storage.backend}
    out.family("echo_build_info", "gauge", "Build of this API process (value is always 1)", [(labels, 1)])
    out.family(
        "echo_api_process_start_time_seconds",
        "gauge",
        "Start time of this API process (epoch seconds)",
        [({}, _STARTED)],
    )


def _queues(out: Exposition, s: Services) -> None:
    depths, unacked = s.store.queue_depths(contract.ALL_QUEUES)
    out.family(
        "echo_queue_depth",
        "gauge",
        "Messages waiting in a Celery queue (not yet taken by a worker)",
        [({"queue": q}, n) for q, n in depths.items()],
    )
    out.family(
        "echo_unacked_messages",
        "gauge",
        "Messages taken by a worker and not yet acknowledged (all queues)",
        [({}, unacked)],
    )


def _workers(out: Exposition, s: Services) -> None:
    beats = s.store.live_workers()
    per_queue: dict[str, int] = defaultdict(int)
    for beat in beats:
        for queue in beat.get("queues") or []:
            per_queue[str(queue)] += 1
    out.family("echo_workers_live", "gauge", "Workers with a live heartbeat", [({}, len(beats))])
    out.family(
        "echo_workers_busy",
        "gauge",
        "Live workers rendering a job (heartbeat, up to 10 s stale)",
        [({}, sum(1 for b in beats if b.get("busy_job")))],
    )
    out.family(
        "echo_workers_live_by_queue",
        "gauge",
        "Live workers consuming a queue",
        [({"queue": q}, per_queue.get(q, 0)) for q in contract.ALL_QUEUES],
    )


def _jobs(out: Exposition, s: Services) -> None:
    counts = s.store.counts_by_state()
    out.family(
        "echo_jobs",
        "gauge",
        "Jobs queued or running now",
        [({"state": state.value}, counts[state]) for state in JobState if state not in TERMINAL_STATES],
    )
    out.family(
        "echo_jobs_finished_total",
        "counter",
        "Jobs that reached a final state",
        [({"state": state.value}, counts[state]) for state in JobState if state in TERMINAL_STATES],
    )


def _requests(out: Exposition, s: Services) -> None:
    counts, buckets, sums = s.request_counts.read()
    samples = []
    for field, n in sorted(counts.items()):
        method, route, status = field.rsplit("|", 2)
        samples.append(({"method": method, "route": route, "status": status}, int(n)))
    out.family("echo_api_requests_total", "counter", "API requests answered, over all API processes", samples)
    per_series: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
    for field, n in buckets.items():
        series, bucket = field.rsplit("|", 1)
        per_series[series][len(BUCKETS) if bucket == "inf" else int(bucket)] += int(n)
    hist: list[str] = []
    name = "echo_api_request_duration_seconds"
    for series, row in sorted(per_series.items()):
        method, route = series.split("|", 1)
        labels: dict[str, object] = {"method": method, "route": route}
        running = 0
        for bound, n in zip((*(repr(b) for b in BUCKETS), "+Inf"), row, strict=True):
            running += n
            hist.append(_sample(f"{name}_bucket", {**labels, "le": bound}, running))
        hist.append(_sample(f"{name}_sum", labels, float(sums.get(series, 0.0))))
        hist.append(_sample(f"{name}_count", labels, running))
    out.lines += [
        f"# HELP {name} Time to the response headers, over all API processes",
        f"# TYPE {name} histogram",
        *hist,
    ]


def render(s: Services, counter: RequestCounter | None) -> str:
    """The whole exposition; with Redis down, only this process's own facts and ``echo_redis_up 0``."""
    out = Exposition()
    _build_info(out, s)
    if counter is not None:
        counter.flush()
    try:
        s.store.ping()
        up = 1
    except redis.RedisError:
        up = 0
    out.family("echo_redis_up", "gauge", "1 when this API process reaches Redis", [({}, up)])
    if up:
        try:
            _queues(out, s)
            _workers(out, s)
            _jobs(out, s)
            _requests(out, s)
        except redis.RedisError as exc:  # Redis went away mid-scrape: answer what was collected
            log.warning("metrics incomplete: %s", exc)
    return out.text()
