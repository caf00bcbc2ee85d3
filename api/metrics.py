"""Prometheus metrics in the text exposition format (0.0.4), without a client library.

What ``GET /metrics`` reports and where each number comes from:

- ``echo_queue_depth{queue}``: messages waiting in each Celery queue (kombu's Redis lists, all
  priority levels); ``echo_unacked_messages``: messages a worker took and has not acknowledged yet.
- ``echo_jobs{state}``: job records per state, counted by scanning ``echo:job:*`` at scrape time (at
  most ``JOB_SCAN_LIMIT`` records; ``echo_jobs_scan_truncated`` says when the count stopped early).
  Records expire ``ECHO_JOB_TTL_S`` after their last change, so finished states are "within retention".
- ``echo_workers_live``, ``echo_workers_busy``, ``echo_workers_live_by_queue{queue}``: worker
  heartbeats (written every 10 s, so ``busy`` may be up to 10 s stale).
- ``echo_api_requests_total{method,route,status}`` and ``echo_api_request_duration_seconds``: every API
  process counts in memory and adds its counts to Redis hashes about once a second, so the numbers are
  the sum over all API processes and replicas (not one gunicorn process's) and survive API restarts;
  a scrape may miss the other processes' last second. ``route`` is the URL rule (``/v1/jobs/<job_id>``),
  ``unmatched`` for unknown paths. Durations are to the response headers (not to the end of a stream).
- ``echo_redis_up``, ``echo_build_info``, ``echo_api_process_start_time_seconds`` (this process).

Nothing here writes job state: counts per state over all time (``_total`` counters of finished jobs)
would need the job store to count transitions, which it does not do.
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
from typing import Any

import redis

from api.services import Services
from worker import contract
from worker.contract import JobState

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
JOB_SCAN_LIMIT = 20_000  # job records counted per scrape at most
_SCAN_CALLS = 200  # SCAN calls per scrape at most (COUNT 1000 each)
_KOMBU_PRIORITY_SEP, _KOMBU_PRIORITIES = "\x06\x16", ("3", "6", "9")  # kombu's Redis priority lists
_KOMBU_UNACKED = "unacked"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_FLUSH_EVERY_S = 1.0
_STARTED = time.time()


def _keys(prefix: str) -> tuple[str, str, str]:
    return f"{prefix}:metrics:api_requests", f"{prefix}:metrics:api_seconds", f"{prefix}:metrics:api_seconds_sum"


class RequestCounter:
    """Per-process request counts and durations, added to Redis hashes by a background thread."""

    def __init__(self, client: Any, prefix: str = "echo") -> None:
        self.r, self.keys = client, _keys(prefix)
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
            pipe = self.r.pipeline(transaction=False)
            for field, n in counts.items():
                pipe.hincrby(self.keys[0], field, n)
            for field, n in buckets.items():
                pipe.hincrby(self.keys[1], field, n)
            for field, total in sums.items():
                pipe.hincrbyfloat(self.keys[2], field, total)
            pipe.execute()
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

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, object], float]],
               *, sample_name: str | None = None) -> None:
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
    out.family("echo_api_process_start_time_seconds", "gauge", "Start time of this API process (epoch seconds)",
               [({}, _STARTED)])


def _queues(out: Exposition, r: Any) -> None:
    pipe = r.pipeline(transaction=False)
    for queue in contract.QUEUES:
        for name in (queue, *(queue + _KOMBU_PRIORITY_SEP + p for p in _KOMBU_PRIORITIES)):
            pipe.llen(name)
    pipe.hlen(_KOMBU_UNACKED)
    *lengths, unacked = pipe.execute()
    per = len(_KOMBU_PRIORITIES) + 1
    depth = [({"queue": q}, sum(lengths[i * per:(i + 1) * per])) for i, q in enumerate(contract.QUEUES)]
    out.family("echo_queue_depth", "gauge", "Messages waiting in a Celery queue (not yet taken by a worker)", depth)
    out.family("echo_unacked_messages", "gauge", "Messages taken by a worker and not yet acknowledged (all queues)",
               [({}, unacked)])


def _workers(out: Exposition, s: Services) -> None:
    beats = s.store.live_workers()
    per_queue: dict[str, int] = defaultdict(int)
    for beat in beats:
        for queue in beat.get("queues") or []:
            per_queue[str(queue)] += 1
    out.family("echo_workers_live", "gauge", "Workers with a live heartbeat", [({}, len(beats))])
    out.family("echo_workers_busy", "gauge", "Live workers rendering a job (heartbeat, up to 10 s stale)",
               [({}, sum(1 for b in beats if b.get("busy_job")))])
    out.family("echo_workers_live_by_queue", "gauge", "Live workers consuming a queue",
               [({"queue": q}, per_queue.get(q, 0)) for q in contract.QUEUES])


def count_jobs(s: Services) -> tuple[dict[str, int], bool]:
    """Job records per state (within retention) and whether the scan stopped at its limit."""
    r, counts = s.store.r, {state.value: 0 for state in JobState}
    cursor, calls, seen, truncated = 0, 0, 0, False
    while True:
        cursor, keys = r.scan(cursor=cursor, match=f"{s.store.prefix}:job:*", count=1000)
        calls += 1
        if keys:
            pipe = r.pipeline(transaction=False)
            for key in keys[: JOB_SCAN_LIMIT - seen]:
                pipe.hget(key, "status")
            for status in pipe.execute():
                if status in counts:
                    counts[status] += 1
            seen += len(keys)
        if cursor == 0:
            break
        if seen >= JOB_SCAN_LIMIT or calls >= _SCAN_CALLS:
            truncated = True
            break
    return counts, truncated


def _jobs(out: Exposition, s: Services) -> None:
    counts, truncated = count_jobs(s)
    out.family("echo_jobs", "gauge", "Job records per state (kept ECHO_JOB_TTL_S after their last change)",
               [({"state": state}, n) for state, n in counts.items()])
    out.family("echo_jobs_scan_truncated", "gauge",
               f"1 when echo_jobs stopped counting at {JOB_SCAN_LIMIT} records", [({}, int(truncated))])


def _requests(out: Exposition, r: Any, prefix: str) -> None:
    counts_key, buckets_key, sums_key = _keys(prefix)
    pipe = r.pipeline(transaction=False)
    for key in (counts_key, buckets_key, sums_key):
        pipe.hgetall(key)
    counts, buckets, sums = pipe.execute()
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
    out.lines += [f"# HELP {name} Time to the response headers, over all API processes", f"# TYPE {name} histogram",
                  *hist]


def render(s: Services, counter: RequestCounter | None) -> str:
    """The whole exposition; with Redis down, only this process's own facts and ``echo_redis_up 0``."""
    out = Exposition()
    _build_info(out, s)
    if counter is not None:
        counter.flush()
    r = s.store.r
    try:
        r.ping()
        up = 1
    except redis.RedisError:
        up = 0
    out.family("echo_redis_up", "gauge", "1 when this API process reaches Redis", [({}, up)])
    if up:
        try:
            _queues(out, r)
            _workers(out, s)
            _jobs(out, s)
            _requests(out, r, s.store.prefix)
        except redis.RedisError as exc:  # Redis went away mid-scrape: answer what was collected
            log.warning("metrics incomplete: %s", exc)
    return out.text()
