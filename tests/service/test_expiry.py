"""Queue expiry: a job still queued past its deadline (ECHO_QUEUE_TIMEOUT_S) ends ``expired``, unrendered.

The API stores ``deadline_ts`` in the record and sends the task with Celery ``expires``. Three paths
lead to ``expired``, all through the job store's atomic queued → expired move: Celery dropping the
message (``task_revoked`` with ``expired=True``), the runner's own check before it starts (a message
without ``expires``), and the API reading a due job (GET, list, cancel) while no worker is up.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from api_helpers import ApiServer
from service_helpers import ApiProcess, wait_for

from jobs import contract
from jobs.contract import ErrorCode, JobState, SynthesisRequest
from jobs.jobstore import JobRecord, JobStore
from jobs.records import iso
from jobs.settings import StorageSettings
from jobs.storage import LocalStorage, S3Storage
from worker.engine import Engine
from worker.runner import expire_delivery, run_synthesis
from worker.settings import WorkerSettings

pytest_plugins = ["api_fixtures"]
START = 1_760_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis_client: redis.Redis, clock: Clock) -> JobStore:
    return JobStore(redis_client, job_ttl_s=600, clock=clock)


def _request(job_id: str) -> dict[str, Any]:
    return SynthesisRequest(job_id=job_id, text="Hello there.", seed=1, overrides={"num_steps": 2}).to_dict()


def _job(store: JobStore, timeout: float = 60.0) -> JobRecord:
    record, _ = store.create("alice", {}, queue_timeout_s=timeout)
    store.r.hset(f"echo:job:{record.id}", "request", json.dumps(_request(record.id)))
    return store.get(record.id)  # type: ignore[return-value]


# -- the job store ------------------------------------------------------------------------------
def test_a_job_queued_past_its_deadline_expires_with_an_error_naming_the_deadline(
    store: JobStore, clock: Clock
) -> None:
    # Given a job with a 60 s queue deadline
    record = _job(store)
    assert record.deadline_ts == START + 60 and record.queue_timeout_s == 60
    # When it is checked before and after the deadline
    early = store.expire_if_due(record)
    clock.now += 61
    late = store.expire_if_due(record)
    # Then it stays queued until then, and is expired afterwards with the deadline and the setting named
    assert early.status is JobState.QUEUED
    assert late.status is JobState.EXPIRED and late.finished_ts == START + 61
    assert late.error is not None and late.error["code"] == ErrorCode.EXPIRED
    assert iso(START + 60) in late.error["message"] and "ECHO_QUEUE_TIMEOUT_S" in late.error["message"]


def test_a_running_or_finished_job_is_never_expired(store: JobStore, clock: Clock) -> None:
    # Given a job a worker started and one that was canceled, both before their deadlines
    running, canceled = _job(store), _job(store)
    assert store.mark_running(running.id)
    store.request_cancel(canceled.id)
    # When the deadline passes and expiry is attempted both ways
    clock.now += 3600
    for job_id in (running.id, canceled.id):
        assert store.mark_expired(job_id) is False
        store.expire_if_due(store.get(job_id))  # type: ignore[arg-type]
    # Then neither moved: only queued → expired exists
    assert store.get(running.id).status is JobState.RUNNING  # type: ignore[union-attr]
    assert store.get(canceled.id).status is JobState.CANCELED  # type: ignore[union-attr]


def test_a_start_racing_an_expiry_has_exactly_one_winner(store: JobStore) -> None:
    # Given many queued jobs
    jobs = [_job(store).id for _ in range(40)]
    results: dict[str, dict[str, bool]] = {job_id: {} for job_id in jobs}

    # When, for each, a worker start and an expiry run at the same moment
    def race(job_id: str, name: str) -> None:
        results[job_id][name] = store.mark_running(job_id) if name == "start" else store.mark_expired(job_id)

    threads = [threading.Thread(target=race, args=(j, n)) for j in jobs for n in ("start", "expire")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then each job ended in exactly the state of the one move that succeeded
    for job_id, won in results.items():
        status = store.get(job_id).status  # type: ignore[union-attr]
        assert won["start"] != won["expire"], won
        assert status is (JobState.RUNNING if won["start"] else JobState.EXPIRED)


def test_listing_by_status_expired_finds_a_job_whose_deadline_passed(store: JobStore, clock: Clock) -> None:
    # Given a job due to expire and a fresh one
    old = _job(store, timeout=10)
    clock.now += 11
    fresh = _job(store, timeout=10)
    # When alice lists her expired and her queued jobs
    expired, _ = store.list_jobs("alice", status=[JobState.EXPIRED])
    queued, _ = store.list_jobs("alice", status=[JobState.QUEUED])
    # Then each filter finds the right one
    assert [r.id for r in expired] == [old.id] and [r.id for r in queued] == [fresh.id]


# -- the runner (no Celery, real Redis) ------------------------------------------------------------
class NoPipeline:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"an expired job must not be rendered (pipeline.{name})")


@pytest.fixture
def engine(store: JobStore, api_redis_url: str, tmp_path: Path) -> Engine:
    settings = WorkerSettings.from_env({"ECHO_REDIS_URL": api_redis_url, "ECHO_STORAGE_DIR": str(tmp_path)})
    return Engine(settings, NoPipeline(), LocalStorage(tmp_path), store)


def test_the_runner_expires_a_job_whose_deadline_passed_before_it_starts(engine: Engine, clock: Clock) -> None:
    # Given a job whose message arrives after its deadline (a worker that was down; no Celery expires)
    record = _job(engine.jobs)
    clock.now += 120
    # When the runner gets it
    outcome = run_synthesis(engine, _request(record.id))
    # Then it is expired and nothing rendered (NoPipeline would fail the test)
    assert outcome["status"] == JobState.EXPIRED and engine.jobs.get(record.id).status is JobState.EXPIRED  # type: ignore[union-attr]


def test_a_message_celery_dropped_as_expired_expires_a_queued_job_and_resends_a_running_one(engine: Engine) -> None:
    # Given a queued job and a running one (its worker died; the message came back after the deadline)
    queued, running = _job(engine.jobs), _job(engine.jobs)
    engine.jobs.mark_running(running.id)
    resent: list[dict[str, Any]] = []
    # When Celery drops both messages as expired
    states = [expire_delivery(engine, job_id, resent.append) for job_id in (queued.id, running.id)]
    # Then the queued one is expired; the running one is sent again (once) so it still finishes
    assert states == [JobState.EXPIRED, JobState.RUNNING]
    assert [r["job_id"] for r in resent] == [running.id]
    # And a finished job is left alone
    assert expire_delivery(engine, queued.id, resent.append) == JobState.EXPIRED and len(resent) == 1


# -- the API over HTTP, no worker --------------------------------------------------------------------
def test_the_api_sends_the_deadline_and_shows_the_job_expired_and_cancel_is_a_no_op(
    launch_api: Any, api_env: dict[str, str], redis_client: redis.Redis
) -> None:
    # Given an API with a 1 s queue timeout and no worker
    api: ApiServer = launch_api(api_env | {"ECHO_QUEUE_TIMEOUT_S": "1"})
    job = api.call("POST", "/v1/jobs", json={"text": "Hello there."}).json()
    # Then the message carries Celery's expires at the record's deadline
    (raw,) = redis_client.lrange(contract.QUEUE_INTERACTIVE, 0, -1)
    expires = json.loads(raw)["headers"]["expires"]
    assert expires.startswith(job["created_at"][:10]) and job["status"] == "queued"
    # When the deadline passes
    time.sleep(1.2)
    # Then GET shows it expired with an error naming the setting, and the status filter finds it
    got = api.call("GET", f"/v1/jobs/{job['id']}").json()
    assert got["status"] == "expired" and got["error"]["code"] == "expired" and got["finished_at"]
    assert "ECHO_QUEUE_TIMEOUT_S" in got["error"]["message"] and got["result"] is None
    listed = api.call("GET", "/v1/jobs?status=expired").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    # And a cancel changes nothing
    canceled = api.call("DELETE", f"/v1/jobs/{job['id']}")
    assert canceled.status_code == 200 and canceled.json()["status"] == "expired"
    assert canceled.json()["cancel_requested"] is False


def test_a_queue_timeout_longer_than_the_retention_is_refused() -> None:
    from api.settings import ApiSettings, SettingsError

    # Given / When a queue timeout that outlives the record, Then the settings name both variables
    env = {"ECHO_REDIS_URL": "redis://x:6379/0", "ECHO_QUEUE_TIMEOUT_S": "7200", "ECHO_JOB_TTL_S": "3600"}
    with pytest.raises(SettingsError, match="ECHO_QUEUE_TIMEOUT_S=7200 must not exceed ECHO_JOB_TTL_S"):
        ApiSettings.from_env(env)
    assert ApiSettings.from_env({"ECHO_REDIS_URL": "redis://x:6379/0"}).queue_timeout_s == 3600


# -- real processes: the API, then a worker ------------------------------------------------------
def _submit(api: ApiProcess) -> dict[str, Any]:
    answer = requests.post(
        f"{api.url}/v1/jobs", json={"text": "Hello there.", "seed": 3, "overrides": {"num_steps": 2}}, timeout=10
    )
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


@pytest.mark.slow
def test_a_job_whose_deadline_passed_while_no_worker_ran_expires_when_one_starts(
    service_env: dict, start_api: Any, start_worker: Any
) -> None:
    # Given a job submitted with a 2 s queue timeout while no worker runs, and the deadline passed
    api = start_api(service_env | {"ECHO_QUEUE_TIMEOUT_S": "2"})
    job = _submit(api)
    store = JobStore.from_url(service_env["ECHO_REDIS_URL"])
    time.sleep(2.5)
    assert store.get(job["id"]).status is JobState.QUEUED  # type: ignore[union-attr]  # nobody looked yet
    # When a worker starts
    worker = start_worker(service_env)
    # Then Celery drops the message, the record says expired, and nothing was rendered or stored
    wait_for(lambda: store.get(job["id"]).status is JobState.EXPIRED, timeout=60, what="the job to expire")  # type: ignore[union-attr]
    assert "Discarding revoked task" in worker.output()
    assert S3Storage(StorageSettings.from_env(service_env)).list_keys(f"jobs/{job['id']}/") == []
    assert store.get(job["id"]).started_ts is None  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_job_picked_up_before_its_deadline_renders_normally(
    service_env: dict, start_api: Any, start_worker: Any
) -> None:
    # Given a running worker and an API with a 2 s queue timeout
    start_worker(service_env)
    api = start_api(service_env | {"ECHO_QUEUE_TIMEOUT_S": "2"})
    # When a job is submitted and the worker takes it at once (it renders past the 2 s if it must)
    job = _submit(api)
    store = JobStore.from_url(service_env["ECHO_REDIS_URL"])
    wait_for(
        lambda: store.get(job["id"]).status in contract.TERMINAL_STATES,
        timeout=120,  # type: ignore[union-attr]
        what="the job to finish",
    )
    # Then it succeeded
    record = store.get(job["id"])
    assert record is not None and record.status is JobState.SUCCEEDED, record.error if record else None


@pytest.mark.slow
def test_a_running_job_whose_worker_died_still_finishes_when_it_comes_back_after_the_deadline(
    service_env: dict, start_api: Any, start_worker: Any
) -> None:
    # Given a 3 s queue timeout and a job a worker started in time (30 steps: the kill lands mid-render)
    env = service_env | {
        "ECHO_TASK_SOFT_TIME_LIMIT_S": "40",
        "ECHO_TASK_TIME_LIMIT_S": "45",
        "ECHO_VISIBILITY_TIMEOUT_S": "50",
    }
    api = start_api(env | {"ECHO_QUEUE_TIMEOUT_S": "3"})
    doomed = start_worker(env)
    answer = requests.post(
        f"{api.url}/v1/jobs", json={"text": "Hello there.", "overrides": {"num_steps": 30}}, timeout=10
    )
    job_id = answer.json()["id"]
    store = JobStore.from_url(service_env["ECHO_REDIS_URL"])
    wait_for(lambda: store.get(job_id).progress.step >= 1, timeout=120, what="the first step")  # type: ignore[union-attr]
    # When its worker is SIGKILLed and the message comes back (visibility timeout 50 s) long past the deadline
    doomed.kill()
    worker = start_worker(env)
    wait_for(
        lambda: store.get(job_id).status in contract.TERMINAL_STATES,
        timeout=180,  # type: ignore[union-attr]
        what="the job to finish",
        interval=0.5,
    )
    # Then Celery dropped the expired message, the job was sent again, and it succeeded on its second delivery
    record = store.get(job_id)
    assert record is not None and record.status is JobState.SUCCEEDED, record.error if record else None
    assert "Discarding revoked task" in worker.output() and record.attempts == 2
