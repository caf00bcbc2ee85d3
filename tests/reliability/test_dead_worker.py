"""Dead-worker recovery with default settings (the broker's visibility timeout left at one hour):
a worker SIGKILLed mid-render is noticed by its missing heartbeat and its message is re-queued by the
other workers' sweep, so the job finishes within about a minute of the kill, exactly once.

Fault model: the killed worker's message stays un-acked in Redis (acks late); its in-flight entry
(``echo:inflight:{worker}``) names the delivery tag; once its heartbeat expires (30 s) a live
worker's sweep (every 10 s, and at start) puts that very message back on its queue. Jobs the killed worker
had claimed into its batch (``jobs/company.py``) have entries ``claim:{id}`` there instead: the sweep sends
their messages again, and their own messages, arriving while the dead worker's heartbeat still shows, are
dropped without loss."""

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


def test_a_batch_whose_worker_is_killed_finishes_within_two_minutes_each_job_exactly_once(
    service_env: dict[str, str], start_worker: Any, start_api: Any
) -> None:
    # Given default settings (visibility timeout one hour), the API and one worker that waits up to 2 s
    # for company, and three jobs submitted at once: the first leads, the other two are claimed into its call
    env = _defaults(service_env) | {"ECHO_BATCH_WINDOW_MS": "2000", "ECHO_JOB_BATCHING": "true"}
    api = start_api(env)
    doomed = start_worker(env)
    bodies = [{"text": "Hello there, world.", "seed": seed, "overrides": {"num_steps": 100}} for seed in (3, 4, 5)]
    jobs = [requests.post(f"{api.url}/v1/jobs", json=body, timeout=10).json() for body in bodies]

    def view(job_id: str) -> dict[str, Any]:
        return dict(requests.get(f"{api.url}/v1/jobs/{job_id}", timeout=10).json())

    wait_for(lambda: view(jobs[0]["id"])["progress"]["step"] >= 1, timeout=120, what="the first step")
    # (all three are running on that worker, one sampler call; each view names it and its last heartbeat)
    running = [view(job["id"])["worker"] for job in jobs]
    assert [worker["name"] for worker in running] == [doomed.name] * 3 and running[0]["last_heartbeat_at"]
    # When the worker is SIGKILLed mid-render and another worker starts
    doomed.kill()
    killed_at = time.monotonic()
    start_worker(env)

    def finished(job_id: str) -> dict[str, Any] | None:
        current = view(job_id)
        return current if current["status"] in TERMINAL else None

    done = [wait_for(lambda j=job: finished(j["id"]), timeout=150, what="a job after the kill") for job in jobs]
    # Then all succeeded within two minutes of the kill, not after the hour-long visibility timeout
    assert [job["status"] for job in done] == ["succeeded"] * 3, done
    assert time.monotonic() - killed_at < 120
    # And each exactly once: one audio object and its description, two deliveries (the batch, then alone)
    storage = S3Storage(StorageSettings.from_env(env))
    store = JobStore.from_url(env["ECHO_REDIS_URL"])
    for job in jobs:
        assert len(storage.list_keys(f"jobs/{job['id']}/")) == 2
        record = store.get(job["id"])
        assert record is not None and record.attempts == 2 and record.worker != doomed.name
