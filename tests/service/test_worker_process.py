"""A real ``python -m worker`` process on the tiny checkpoint, fed by Celery messages on a real
Redis, storing into a real S3 server (moto on loopback). The API is not involved here."""

from __future__ import annotations

import subprocess
import time

import pytest
from service_helpers import PYTHON, ROOT, heartbeat, process_env, submit_task, wait_for

from jobs import contract
from jobs.contract import JobState, SynthesisRequest
from jobs.jobstore import JobRecord, JobStore
from jobs.settings import StorageSettings
from jobs.storage import S3Storage

FAST = {"num_steps": 2}


def _job(store: JobStore, **changes: object) -> SynthesisRequest:
    record, _ = store.create("local", {})
    values: dict = {"job_id": record.id, "text": "Hello from the worker.", "seed": 5, "overrides": FAST} | changes
    request = SynthesisRequest(**values)
    submit_task(_url(store), contract.SYNTHESIZE, request.to_dict(), task_id=request.job_id)
    return request


def _url(store: JobStore) -> str:
    kw = store.r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def _finished(store: JobStore, job_id: str, timeout: float = 120) -> JobRecord:
    def done() -> JobRecord | None:
        record = store.get(job_id)
        return record if record and record.status in contract.TERMINAL_STATES else None

    return wait_for(done, timeout=timeout, what=f"job {job_id} to finish", interval=0.1)  # type: ignore[return-value]


def test_a_malformed_setting_stops_the_worker_naming_it(redis_url: str) -> None:
    # Given a batch size that is not a number
    env = process_env({"ECHO_REDIS_URL": redis_url, "ECHO_BATCH_SIZE": "many"})
    # When the worker starts
    done = subprocess.run([PYTHON, "-m", "worker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    # Then it exits at once with status 2 and names the setting
    assert done.returncode == 2 and "ECHO_BATCH_SIZE" in done.stderr


def test_an_invalid_bucket_name_stops_the_worker_naming_the_setting(redis_url: str, s3_endpoint: str) -> None:
    # Given an S3 endpoint and a bucket name S3 refuses (two characters; 3 to 63 are allowed)
    env = process_env({"ECHO_REDIS_URL": redis_url, "ECHO_S3_ENDPOINT_URL": s3_endpoint, "ECHO_S3_BUCKET": "qa"})
    # When the worker starts
    done = subprocess.run([PYTHON, "-m", "worker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    # Then it exits at once with status 2, naming the setting and without a traceback
    assert done.returncode == 2 and "ECHO_S3_BUCKET" in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_worker_whose_model_cannot_load_exits_non_zero(redis_url: str, tmp_path: object) -> None:
    # Given a model directory without weights
    env = process_env(
        {
            "ECHO_REDIS_URL": redis_url,
            "ECHO_STORAGE_DIR": str(tmp_path),
            "ECHO_DEVICE": "cpu",
            "ECHO_MODEL_REPO": str(tmp_path),
            "ECHO_AE_REPO": str(tmp_path),
        }
    )
    # When the worker starts, Then it exits non-zero (so an orchestrator restarts it) naming the problem
    done = subprocess.run([PYTHON, "-m", "worker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "failed to load" in done.stdout + done.stderr


@pytest.mark.slow
def test_a_worker_renders_jobs_into_s3_deterministically_and_announces_itself(service_env: dict, start_worker) -> None:
    # Given a running worker (its heartbeat names the loaded model)
    worker = start_worker(service_env)
    beat = heartbeat(service_env["ECHO_REDIS_URL"], worker.name)
    assert beat is not None and beat["model_revision"] and beat["device"] == "cpu"
    store = JobStore.from_url(service_env["ECHO_REDIS_URL"])
    # When the same request and seed are submitted twice
    first, second = _job(store, format="wav"), _job(store, format="wav")
    a, b = _finished(store, first.job_id), _finished(store, second.job_id)
    # Then both succeed with a WAV in the bucket, byte-identical, with full progress and timings
    assert a.status is JobState.SUCCEEDED and b.status is JobState.SUCCEEDED, (a.error, b.error)
    storage = S3Storage(StorageSettings.from_env(service_env))
    audio_a, audio_b = storage.get_bytes(a.result["key"]), storage.get_bytes(b.result["key"])  # type: ignore[index]
    assert audio_a[:4] == b"RIFF" and audio_a == audio_b
    assert storage.head(a.result["key"])["ContentType"] == "audio/wav"  # type: ignore[index]
    assert a.progress.fraction == 1.0 and a.timings and a.timings["rtf"] > 0


@pytest.mark.slow
def test_a_job_canceled_while_running_stops_and_the_worker_takes_the_next(service_env: dict, start_worker) -> None:
    # Given a worker rendering a long job
    start_worker(service_env)
    store = JobStore.from_url(service_env["ECHO_REDIS_URL"])
    # (long text: several batches of 100-step pieces, so it cannot finish before the cancel lands)
    slow = _job(store, text="This sentence keeps the worker busy for a while. " * 60, overrides={"num_steps": 100})
    wait_for(lambda: (r := store.get(slow.job_id)) and r.progress.step >= 1, timeout=120, what="the first step")
    # When the client cancels it
    began = time.monotonic()
    store.request_cancel(slow.job_id)
    # Then it ends canceled within a few steps, nothing is stored, and the next job still renders
    assert _finished(store, slow.job_id).status is JobState.CANCELED
    assert time.monotonic() - began < 30
    assert _finished(store, _job(store).job_id).status is JobState.SUCCEEDED


@pytest.mark.slow
def test_sigterm_stops_an_idle_worker_cleanly_and_removes_its_heartbeat(service_env: dict, start_worker) -> None:
    # Given an idle worker
    worker = start_worker(service_env)
    # When it gets SIGTERM, Then it exits 0 and no longer announces itself
    assert worker.stop() == 0
    assert heartbeat(service_env["ECHO_REDIS_URL"], worker.name) is None
