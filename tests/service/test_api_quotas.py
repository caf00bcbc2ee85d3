"""Per-key quotas over real HTTP (real Redis, S3 on moto; no worker, so submitted work stays queued):
requests per minute, and jobs / audiobooks queued or running, each answered 429 with Retry-After and
the setting named; other keys and the unauthenticated routes are unaffected."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
import requests
from api_helpers import ApiServer

from api.settings import ApiSettings, SettingsError
from jobs.jobstore import JobStore

pytest_plugins = ["api_fixtures"]

BOOK = {"chapters": [{"title": "A", "text": "Hi."}]}


def assert_429(answer: requests.Response, code: str, setting: str) -> dict:
    assert answer.status_code == 429, answer.text
    assert int(answer.headers["Retry-After"]) >= 1
    error = answer.json()["error"]
    assert error["code"] == code and setting in error["message"] and error["details"]["limit"] == setting.split("=")[0]
    return dict(error)


def test_the_request_after_the_limit_in_a_minute_is_429_across_processes_and_per_key(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], redis_client: redis.Redis
) -> None:
    # Given two API processes sharing a limit of 5 requests per minute per key
    env = api_env | {"ECHO_RATE_LIMIT_PER_MIN": "5"}
    first, second = launch_api(env), launch_api(env)
    # When alice makes 3 requests through one and 2 through the other
    answers = [first.call("GET", "/v1/jobs") for _ in range(3)] + [second.call("GET", "/v1/jobs") for _ in range(2)]
    assert [a.status_code for a in answers] == [200] * 5
    # Then her sixth, through either, is 429 naming the setting, with the rest of the minute to wait
    refused = assert_429(second.call("GET", "/v1/voices"), "rate_limited", "ECHO_RATE_LIMIT_PER_MIN=5")
    assert refused["details"]["retry_after_s"] <= 60
    assert_429(first.call("POST", "/v1/jobs", json={"text": "Hi."}), "rate_limited", "ECHO_RATE_LIMIT_PER_MIN=5")
    # And bob is unaffected, and the unauthenticated routes are never limited
    assert first.call("GET", "/v1/jobs", as_="bob").status_code == 200
    for path in ("/healthz", "/readyz", "/metrics", "/v1/openapi.json"):
        assert first.call("GET", path, as_=None).status_code in (200, 503), path  # readyz: 503 without a worker
    # And a wrong key is 401, counted against nobody
    assert (
        first.call("GET", "/v1/jobs", as_=None, headers={"Authorization": "Bearer nope-nope-nope"}).status_code == 401
    )
    # And once alice's window has passed (shortened here), she is served again
    assert redis_client.pexpire("echo:ratelimit:alice", 1), redis_client.keys("*ratelimit*")
    time.sleep(0.01)
    assert first.call("GET", "/v1/jobs").status_code == 200


def test_the_job_past_the_queued_quota_is_429_until_one_is_canceled(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], redis_client: redis.Redis
) -> None:
    # Given an API allowing 2 jobs queued or running per key, and alice's 2 jobs (one running now)
    api = launch_api(api_env | {"ECHO_MAX_QUEUED_JOBS": "2", "ECHO_SPEECH_TIMEOUT_S": "0.2"})
    ids = []
    for n in range(2):
        answer = api.call("POST", "/v1/jobs", json={"text": f"Hi {n}."}, headers={"Idempotency-Key": f"k{n}"})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    assert JobStore(redis_client).mark_running(ids[0], worker="w1")
    # When she submits a third job, and a speech request (a job too)
    refused = api.call("POST", "/v1/jobs", json={"text": "Hi 2."})
    speech = api.call("POST", "/v1/audio/speech", json={"input": "Hi.", "voice": "none"})
    # Then both are 429 naming the setting, and nothing more was stored
    error = assert_429(refused, "quota_exceeded", "ECHO_MAX_QUEUED_JOBS=2")
    assert error["details"]["active"] == 2
    assert_429(speech, "quota_exceeded", "ECHO_MAX_QUEUED_JOBS=2")
    assert len(api.call("GET", "/v1/jobs").json()["jobs"]) == 2
    # And an idempotent replay of an admitted job is still answered, bob is unaffected
    replay = api.call("POST", "/v1/jobs", json={"text": "Hi 1."}, headers={"Idempotency-Key": "k1"})
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert api.call("POST", "/v1/jobs", json={"text": "Hi."}, as_="bob").status_code == 202
    # When she cancels the queued one, a new job is admitted, and the one after it is refused again
    assert api.call("DELETE", f"/v1/jobs/{ids[1]}").status_code == 200
    assert api.call("POST", "/v1/jobs", json={"text": "Hi 3."}).status_code == 202
    assert_429(api.call("POST", "/v1/jobs", json={"text": "Hi 4."}), "quota_exceeded", "ECHO_MAX_QUEUED_JOBS=2")
    # And when the running one finishes, its place is free
    assert JobStore(redis_client).succeed(ids[0], {"key": "x", "duration_s": 1.0})
    assert api.call("POST", "/v1/jobs", json={"text": "Hi 5."}).status_code == 202


def test_the_book_past_the_queued_quota_is_429_until_one_is_canceled(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], redis_client: redis.Redis
) -> None:
    # Given an API allowing one audiobook queued or running per key, and alice's book
    api = launch_api(api_env | {"ECHO_MAX_QUEUED_BOOKS": "1"})
    first = api.call("POST", "/v1/audiobooks", json=BOOK)
    assert first.status_code == 202, first.text
    # When she submits another, it is 429 naming the setting; bob's is admitted; jobs are not limited
    assert_429(api.call("POST", "/v1/audiobooks", json=BOOK), "quota_exceeded", "ECHO_MAX_QUEUED_BOOKS=1")
    assert api.call("POST", "/v1/audiobooks", json=BOOK, as_="bob").status_code == 202
    assert api.call("POST", "/v1/jobs", json={"text": "Hi."}).status_code == 202
    # Then after she cancels the first, a new book is admitted
    assert api.call("DELETE", f"/v1/audiobooks/{first.json()['id']}").status_code == 200
    assert api.call("POST", "/v1/audiobooks", json=BOOK).status_code == 202


def test_quotas_are_off_by_default_and_a_bad_value_names_the_setting(api_env: dict[str, str]) -> None:
    settings = ApiSettings.from_env(api_env)
    assert (settings.rate_limit_per_min, settings.max_queued_jobs, settings.max_queued_books) == (0, 0, 0)
    for name, value in (
        ("ECHO_MAX_QUEUED_JOBS", "-1"),
        ("ECHO_RATE_LIMIT_PER_MIN", "many"),
        ("ECHO_MAX_QUEUED_BOOKS", "10001"),
    ):
        with pytest.raises(SettingsError, match=name):
            ApiSettings.from_env(api_env | {name: value})
