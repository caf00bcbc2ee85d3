"""Dead-worker recovery with default settings (the broker's visibility timeout left at one hour):
a worker SIGKILLed mid-render is noticed by its missing heartbeat and its message is re-queued by the
other workers' sweep, so the job finishes within about a minute of the kill, exactly once.

Fault model: the killed worker's message stays un-acked in Redis (acks late); its in-flight entry
(``echo:inflight:{worker}``) names the delivery tag; once its heartbeat expires (30 s) a live
worker's sweep (every 10 s, and at start) puts that very message back on its queue."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from service_helpers import wait_for

from jobs.jobstore import JobStore
from jobs.settings import StorageSettings
from jobs.storage import S3Storage

pytestmark = pytest.mark.slow
TERMINAL = ("succeeded", "failed", "canceled", "expired")


def _defaults(service_env: dict[str, str]) -> dict[str, str]:
    """The test stack's settings without the shortened time limits and visibility timeout."""
    shortened = (
        "ECHO_TASK_SOFT_TIME_LIMIT_S",
        "ECHO_TASK_TIME_LIMIT_S",
        "ECHO_VISIBILITY_TIMEOUT_S",
        "ECHO_UNACKED_RESTORE_INTERVAL_S",
    )
    return {k: v for k, v in service_env.items() if k not in shortened}


def test_a_job_whose_worker_is_killed_finishes_within_two_minutes_exactly_once(
    service_env: dict[str, str], start_worker: Any, start_api: Any
) -> None:
    # Given default settings (visibility timeout one hour), the API and one worker rendering a long job
    env = _defaults(service_env)
    api = start_api(env)
    doomed = start_worker(env)
    body = {"text": "Hello there, world.", "seed": 3, "overrides": {"num_steps": 100}}
    job = requests.post(f"{api.url}/v1/jobs", json=body, timeout=10).json()

    def view() -> dict[str, Any]:
        return dict(requests.get(f"{api.url}/v1/jobs/{job['id']}", timeout=10).json())

    wait_for(lambda: view()["progress"]["step"] >= 1, timeout=120, what="the first step")
    # (the running job names its worker and that worker's last heartbeat)
    running = view()
    assert running["worker"]["name"] == doomed.name and running["worker"]["last_heartbeat_at"]
    # When the worker is SIGKILLed mid-render and another worker starts
    doomed.kill()
    killed_at = time.monotonic()
    start_worker(env)

    def finished() -> dict[str, Any] | None:
        current = view()
        return current if current["status"] in TERMINAL else None

    done = wait_for(finished, timeout=150, what="the job after the kill", interval=0.5)
    # Then it succeeded within two minutes of the kill, not after the hour-long visibility timeout
    assert isinstance(done, dict) and done["status"] == "succeeded", done
    assert time.monotonic() - killed_at < 120
    # And exactly once: one audio object and its description; the record was delivered twice
    storage = S3Storage(StorageSettings.from_env(env))
    assert len(storage.list_keys(f"jobs/{job['id']}/")) == 2
    record = JobStore.from_url(env["ECHO_REDIS_URL"]).get(job["id"])
    assert record is not None and record.attempts == 2 and record.worker != doomed.name
