"""GET /metrics over real HTTP: Prometheus text that parses, and numbers that move with the service."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests
from api_helpers import ApiServer
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import ApiProcess, wait_for

from jobs import contract
from jobs.contract import TERMINAL_STATES
from jobs.jobstore import JobStore
from jobs.render_stats import RENDER_SECONDS_BUCKETS, RTF_BUCKETS, RenderStats

pytest_plugins = ["api_fixtures"]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)?\}})? (\S+)$")
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """A strict reading of the text format 0.0.4: every line is HELP, TYPE or a sample of a declared
    family, every value a number; returns ``{(name, labels): value}``."""
    assert text.endswith("\n")
    declared: dict[str, str] = {}
    samples: Samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped") and name not in declared
            declared[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in declared else name
        assert family in declared, f"{name} has no TYPE line"
        key = (name, frozenset(_PAIR.findall(labels or "")))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(api: ApiServer) -> Samples:
    answer = api.call("GET", "/metrics", as_=None)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(answer.text)


def test_metrics_need_no_key_and_parse_as_prometheus_text(api: ApiServer) -> None:
    # Given an API with keys configured
    # When /metrics is fetched without one
    samples = scrape(api)
    # Then it parses, and reports Redis up, the build, every queue and every job state (live or finished)
    assert value(samples, "echo_redis_up") == 1
    assert any(name == "echo_build_info" for name, _ in samples)
    queues = {dict(labels)["queue"] for name, labels in samples if name == "echo_queue_depth"}
    assert queues == set(contract.ALL_QUEUES) and {"tts", "tts-bulk", "tts-assembly"} <= queues
    states = {dict(labels)["state"] for name, labels in samples if name == "echo_jobs"}
    finished = {dict(labels)["state"] for name, labels in samples if name == "echo_jobs_finished_total"}
    assert states | finished == {"queued", "running", "succeeded", "failed", "canceled", "expired"}
    assert states == {"queued", "running"}


def test_metrics_move_when_a_job_is_submitted(api: ApiServer) -> None:
    # Given a first scrape
    before = scrape(api)
    # When alice submits a job (no worker takes it)
    assert api.call("POST", "/v1/jobs", json={"text": "Hello there."}).status_code == 202
    after = scrape(api)
    # Then the interactive queue, the queued jobs and the request counter each moved by one
    assert value(after, "echo_queue_depth", queue="tts") == value(before, "echo_queue_depth", queue="tts") + 1
    assert value(after, "echo_jobs", state="queued") == value(before, "echo_jobs", state="queued") + 1
    posted = {"method": "POST", "route": "/v1/jobs", "status": "202"}
    assert value(after, "echo_api_requests_total", **posted) == value(before, "echo_api_requests_total", **posted) + 1
    # And the duration histogram counted it, its buckets cumulative up to +Inf
    series = {"method": "POST", "route": "/v1/jobs"}
    count = value(after, "echo_api_request_duration_seconds_count", **series)
    assert count >= 1 and value(after, "echo_api_request_duration_seconds_bucket", **series, le="+Inf") == count
    assert value(after, "echo_api_request_duration_seconds_sum", **series) > 0


def test_requests_are_counted_by_route_rule_and_status_including_refusals(api: ApiServer) -> None:
    # Given / When an unknown job is asked for, one without a key, and an unknown path
    api.call("GET", "/v1/jobs/job_nope")
    api.call("GET", "/v1/jobs/job_nope", as_=None)
    api.call("GET", "/no/such/path/123")
    samples = scrape(api)
    # Then each is counted under its URL rule (ids do not become labels) and its status
    rule = {"method": "GET", "route": "/v1/jobs/<job_id>"}
    assert value(samples, "echo_api_requests_total", **rule, status="404") == 1
    assert value(samples, "echo_api_requests_total", **rule, status="401") == 1
    assert value(samples, "echo_api_requests_total", method="GET", route="unmatched", status="404") >= 1
    assert not any("job_nope" in str(labels) for _, labels in samples)


def test_live_workers_come_from_heartbeats(api: ApiServer, api_redis_url: str) -> None:
    # Given two worker heartbeats, one busy with a job, one consuming only the bulk queue
    store = JobStore.from_url(api_redis_url)
    store.heartbeat("gpu0@host", {"queues": ["tts", "tts-bulk"], "busy_job": "job_x"})
    store.heartbeat("gpu1@host", {"queues": ["tts-bulk"], "busy_job": None})
    # When metrics are scraped
    samples = scrape(api)
    # Then both are live, one busy, and each queue has its consumers
    assert value(samples, "echo_workers_live") == 2 and value(samples, "echo_workers_busy") == 1
    assert value(samples, "echo_workers_live_by_queue", queue="tts") == 1
    assert value(samples, "echo_workers_live_by_queue", queue="tts-bulk") == 2


def test_request_counts_are_shared_by_all_api_processes(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], redis_client: redis.Redis
) -> None:
    # Given an API with four gunicorn processes
    api = launch_api(api_env, workers=4)
    # When it refuses twenty keyless job reads (spread over its processes)
    for _ in range(20):
        assert requests.get(f"{api.url}/v1/jobs/job_x", headers={"Connection": "close"}, timeout=10).status_code == 401
    # Then within a few seconds any scrape counts all twenty, whichever process answers it
    wait_for(
        lambda: (
            value(scrape(api), "echo_api_requests_total", method="GET", route="/v1/jobs/<job_id>", status="401") == 20
        ),
        timeout=10,
        what="twenty counted refusals",
    )


def test_metrics_answer_with_redis_down(launch_api: Callable[..., ApiServer], api_env: dict[str, str]) -> None:
    # Given an API whose Redis does not answer
    api = launch_api(api_env | {"ECHO_REDIS_URL": "redis://127.0.0.1:1/0"})
    # When /metrics is fetched
    samples = scrape(api)
    # Then it still answers, saying Redis is down, with the build info
    assert value(samples, "echo_redis_up") == 0 and any(name == "echo_build_info" for name, _ in samples)


# -- render statistics: recorded by the workers in Redis, reported by the API -----------------------

RENDER_FAMILIES = {
    "echo_render_seconds": "histogram",
    "echo_render_realtime_factor": "histogram",
    "echo_segments_rendered": "counter",
    "echo_segment_cache_hits": "counter",
    "echo_segment_cache_misses": "counter",
}


def families(url: str) -> tuple[dict[str, str], Samples]:
    """``/metrics`` read by prometheus_client's own parser: ``({family: type}, {(sample, labels): value})``."""
    answer = requests.get(f"{url}/metrics", timeout=10)
    assert answer.status_code == 200
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def test_render_statistics_add_up_over_observations_in_redis(redis_client: redis.Redis, api_redis_url: str) -> None:
    # Given the render counters on an empty Redis, as two worker processes (two connections) write them
    first, second = RenderStats(redis_client), RenderStats(redis.Redis.from_url(api_redis_url, decode_responses=True))
    # When one job of 3 pieces took 2 s of model time for 4 s of audio, another 0.1 s for 1 s (one piece),
    # a book group found 3 segments in the cache and rendered 2, and a job finished from storage (no model time)
    first.job_rendered({"duration_s": 4.0, "pieces": [{}, {}, {}]}, {"model_s": 2.0})
    second.job_rendered({"duration_s": 1.0, "pieces": [{}]}, {"model_s": 0.1})
    second.job_rendered({"duration_s": 1.0, "pieces": [{}]}, {})
    second.segment_cache_lookups(hits=3, misses=2)
    second.book_segments_rendered(2)
    snap = first.read()
    # Then the histograms are cumulative per bound, with the sums and counts of both observations
    seconds = dict(snap.render_seconds.buckets)
    assert seconds[0.1] == 1 and seconds[1.0] == 1 and seconds[2.5] == 2 and seconds[math.inf] == 2
    assert all(n == 2 for bound, n in seconds.items() if bound >= 2.0)
    assert snap.render_seconds.count == 2 and snap.render_seconds.sum == pytest.approx(2.1)
    rtf = dict(snap.realtime_factor.buckets)
    assert rtf[0.05] == 0 and rtf[0.1] == 1 and rtf[0.5] == 2 and snap.realtime_factor.sum == pytest.approx(0.6)
    assert [b for b, _ in snap.render_seconds.buckets] == [*RENDER_SECONDS_BUCKETS, math.inf]
    assert [b for b, _ in snap.realtime_factor.buckets] == [*RTF_BUCKETS, math.inf]
    # And pieces and segments are counted by kind, cache lookups as hits and misses
    assert snap.segments == {"job": 4, "book": 2}
    assert (snap.cache_hits, snap.cache_misses) == (3, 2)


def test_render_families_are_reported_before_any_render(api: ApiServer) -> None:
    # Given an API on an empty Redis (no worker has rendered anything)
    # When /metrics is read with prometheus_client's parser
    types, samples = families(api.url)
    # Then every render family is there, with its type, at zero, and the older families are still there
    assert {name: types.get(name) for name in RENDER_FAMILIES} == RENDER_FAMILIES
    assert value(samples, "echo_render_seconds_count") == 0 and value(samples, "echo_render_seconds_sum") == 0
    assert value(samples, "echo_render_seconds_bucket", le="+Inf") == 0
    assert value(samples, "echo_segments_rendered_total", kind="job") == 0
    assert value(samples, "echo_segments_rendered_total", kind="book") == 0
    assert {"echo_queue_depth", "echo_jobs", "echo_jobs_finished", "echo_api_requests", "echo_redis_up"} <= set(types)


def _finish(url: str, path: str, timeout: float = 240) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        answer = requests.get(f"{url}{path}", timeout=10)
        assert answer.status_code == 200, answer.text
        body = dict(answer.json())
        return body if body["status"] in TERMINAL_STATES else None

    body = wait_for(done, timeout=timeout, what=path, interval=0.2)
    assert isinstance(body, dict)
    return body


@pytest.mark.slow
def test_a_rendered_job_is_timed_and_its_pieces_counted(
    service_env: dict[str, str], start_api: Callable[..., ApiProcess], start_worker: Callable[..., Any]
) -> None:
    # Given the API and a worker that cuts text into pieces of at most 40 bytes
    env = service_env | {"ECHO_MAX_PIECE_BYTES": "40"}
    api = start_api(env)
    start_worker(env)
    # When a job of two sentences renders
    text = "The first sentence is here. And then the second one."
    answer = requests.post(f"{api.url}/v1/jobs", json={"text": text, "overrides": {"num_steps": 2}}, timeout=10)
    assert answer.status_code == 202, answer.text
    job = _finish(api.url, f"/v1/jobs/{answer.json()['id']}")
    assert job["status"] == "succeeded", job
    model_s, audio_s = job["timings"]["model_s"], job["result"]["duration_s"]
    pieces = JobStore.from_url(env["ECHO_REDIS_URL"]).get(job["id"]).result["pieces"]  # type: ignore[union-attr]
    _, samples = families(api.url)
    # Then the render histogram holds one observation: the job's model time, in the buckets at and above it
    assert value(samples, "echo_render_seconds_count") == 1
    assert value(samples, "echo_render_seconds_sum") == pytest.approx(model_s) and model_s > 0
    for bound in (*RENDER_SECONDS_BUCKETS, math.inf):
        assert value(samples, "echo_render_seconds_bucket", le=le(bound)) == (1 if model_s <= bound else 0)
    # And its real-time factor (model seconds per audio second) is observed once
    assert value(samples, "echo_render_realtime_factor_count") == 1
    assert value(samples, "echo_render_realtime_factor_sum") == pytest.approx(model_s / audio_s, rel=1e-3)
    # And its pieces (two or more) are counted as rendered job segments, no book segment
    assert len(pieces) >= 2
    assert value(samples, "echo_segments_rendered_total", kind="job") == len(pieces)
    assert value(samples, "echo_segments_rendered_total", kind="book") == 0
    # And the job counters still move with it
    assert value(samples, "echo_jobs_finished_total", state="succeeded") == 1


@pytest.mark.slow
def test_book_segments_are_counted_and_a_second_identical_book_hits_the_cache(
    service_env: dict[str, str], start_api: Callable[..., ApiProcess], start_worker: Callable[..., Any]
) -> None:
    # Given the API and one render worker that also plans and assembles books, with small pieces and groups
    env = service_env | {"ECHO_MAX_PIECE_BYTES": "80", "ECHO_BOOK_GROUP_SIZE": "2"}
    api = start_api(env)
    start_worker(env, queues="tts,tts-bulk,tts-assembly")
    body = {
        "title": "Notes",
        "seed": 5,
        "overrides": {"num_steps": 2},
        "chapters": [
            {"title": "One", "text": "The first chapter.\n\nIt has two paragraphs."},
            {"title": "Two", "text": "A middle.\n\nStill the middle."},
        ],
    }

    def render_book() -> dict[str, Any]:
        answer = requests.post(f"{api.url}/v1/audiobooks", json=body, timeout=30)
        assert answer.status_code == 202, answer.text
        book = _finish(api.url, f"/v1/audiobooks/{answer.json()['id']}")
        assert book["status"] == "succeeded", book
        return book

    # When a book renders
    first = render_book()
    _, after_first = families(api.url)
    # Then each of its segments is counted as rendered, each one a cache miss
    total = first["segments_total"]
    assert total >= 4 and first["segments_rendered"] == total
    assert value(after_first, "echo_segments_rendered_total", kind="book") == total
    assert value(after_first, "echo_segment_cache_misses_total") == total
    assert value(after_first, "echo_segment_cache_hits_total") == 0
    # When the same book is submitted again
    again = render_book()
    _, after_again = families(api.url)
    # Then every segment is a cache hit and none renders again
    assert again["segments_cached"] == total
    assert value(after_again, "echo_segment_cache_hits_total") == total
    assert value(after_again, "echo_segment_cache_misses_total") == total
    assert value(after_again, "echo_segments_rendered_total", kind="book") == total
    # And no job was timed (books are segments, not jobs)
    assert value(after_again, "echo_render_seconds_count") == 0
