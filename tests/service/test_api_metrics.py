"""GET /metrics over real HTTP: Prometheus text that parses, and numbers that move with the service."""

from __future__ import annotations

import re
from collections.abc import Callable

import redis
import requests
from api_helpers import ApiServer
from service_helpers import wait_for

from jobs.jobstore import JobStore

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
    # Then it parses, and reports Redis up, the build, the three queues and every job state (live or finished)
    assert value(samples, "echo_redis_up") == 1
    assert any(name == "echo_build_info" for name, _ in samples)
    assert {labels for name, labels in samples if name == "echo_queue_depth"} == {
        frozenset({("queue", "tts")}),
        frozenset({("queue", "tts-bulk")}),
        frozenset({("queue", "tts-assembly")}),
    }
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
