"""End to end over real HTTP: the API (``python -m api``), real ``python -m worker`` processes on
the tiny checkpoint, a real Redis and an S3 server on loopback.

Fault model (what survives what):
- the job record lives in Redis and the audio in S3: both outlive any worker process;
- the Celery message is acked only after the task ends (acks_late), so a worker killed with
  SIGKILL leaves it un-acked in Redis; once the visibility timeout passes, another worker gets it;
- that worker finds no result in S3, renders again, and uploads once under the deterministic key;
  had the first worker uploaded before dying, the second would only finish the record.
"""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
import requests
import soundfile as sf
from service_helpers import ApiProcess, wait_for

from jobs.contract import OUTPUT_FORMATS, TERMINAL_STATES
from jobs.settings import StorageSettings
from jobs.storage import S3Storage

pytestmark = pytest.mark.slow
FAST = {"num_steps": 2}


def submit(api: ApiProcess, **body: Any) -> dict[str, Any]:
    answer = requests.post(
        f"{api.url}/v1/jobs", json={"text": "Hello there, world.", "seed": 11, "overrides": FAST} | body, timeout=10
    )
    assert answer.status_code == 202, answer.text
    assert answer.headers["Location"].endswith(answer.json()["id"])
    return dict(answer.json())


def get(api: ApiProcess, job_id: str) -> dict[str, Any]:
    answer = requests.get(f"{api.url}/v1/jobs/{job_id}", timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def finish(api: ApiProcess, job_id: str, timeout: float = 180, seen: list[float] | None = None) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = get(api, job_id)
        if seen is not None:
            seen.append(job["progress"]["fraction"])
        return job if job["status"] in TERMINAL_STATES else None

    return wait_for(done, timeout=timeout, what=f"job {job_id}", interval=0.1)  # type: ignore[return-value]


def download(job: dict[str, Any]) -> bytes:
    answer = requests.get(job["result"]["url"], timeout=30)
    assert answer.status_code == 200
    return answer.content


def test_jobs_render_to_valid_files_of_each_format_and_repeat_exactly(
    service_env: dict, start_worker, start_api
) -> None:
    # Given the API and one worker
    api = start_api(service_env)
    start_worker(service_env)
    # When jobs are submitted in several formats, and the WAV one twice with the same seed
    formats = ["wav", "mp3", "opus", "aac", "pcm"]
    jobs = {fmt: submit(api, format=fmt) for fmt in formats}
    again = submit(api, format="wav")
    progress: list[float] = []
    done = {fmt: finish(api, job["id"], seen=progress if fmt == "wav" else None) for fmt, job in jobs.items()}
    # Then every job succeeded and its download is a valid file of that format
    for fmt, job in done.items():
        assert job["status"] == "succeeded", job["error"]
        data = download(job)
        assert len(data) == job["result"]["bytes"] and job["result"]["content_type"] == OUTPUT_FORMATS[fmt].content_type
        if fmt == "pcm":
            assert abs(len(data) / 2 - job["result"]["duration_s"] * job["result"]["sample_rate"]) <= 5
        elif fmt == "wav":
            samples, rate = sf.read(io.BytesIO(data))
            assert rate == 44100 and len(samples) / rate == pytest.approx(job["result"]["duration_s"], abs=1e-3)
        else:
            from echo_tts.audio import load_audio

            decoded = load_audio(data)
            assert decoded.shape[1] / 44100 == pytest.approx(job["result"]["duration_s"], abs=0.1)
    # And the same request and seed gave the same samples; progress only moved forward
    assert download(finish(api, again["id"])) == download(done["wav"])
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert done["wav"]["timings"]["queue_s"] >= 0 and done["wav"]["timings"]["rtf"] > 0


def test_a_job_canceled_while_queued_never_renders_and_one_canceled_while_running_stops(
    service_env: dict, start_worker, start_api
) -> None:
    # Given the API and no worker yet: a job waits in the queue
    api = start_api(service_env)
    queued = submit(api)
    # When it is canceled (twice: cancel is idempotent)
    first = requests.delete(f"{api.url}/v1/jobs/{queued['id']}", timeout=10)
    second = requests.delete(f"{api.url}/v1/jobs/{queued['id']}", timeout=10)
    # Then it is canceled at once
    assert first.json()["status"] == second.json()["status"] == "canceled"
    # Given a worker that now renders a long job
    start_worker(service_env)
    # (long text: several 100-step pieces, so it cannot finish before the cancel lands)
    running = submit(api, text="This sentence keeps the worker busy for a while. " * 60, overrides={"num_steps": 100})
    wait_for(lambda: get(api, running["id"])["progress"]["step"] >= 1, timeout=120, what="the first step")
    # When that one is canceled
    assert requests.delete(f"{api.url}/v1/jobs/{running['id']}", timeout=10).status_code in (200, 202)
    # Then it stops, the queued one never ran, and neither left audio behind
    assert finish(api, running["id"], timeout=60)["status"] == "canceled"
    assert get(api, queued["id"])["started_at"] is None
    storage = S3Storage(StorageSettings.from_env(service_env))
    assert storage.list_keys(f"jobs/{queued['id']}/") == storage.list_keys(f"jobs/{running['id']}/") == []


def test_a_worker_killed_mid_render_loses_nothing_and_the_job_succeeds_once(
    service_env: dict, start_worker, start_api
) -> None:
    # Given time limits that let a few-second render finish, and a visibility timeout just above them
    env = service_env | {
        "ECHO_TASK_SOFT_TIME_LIMIT_S": "40",
        "ECHO_TASK_TIME_LIMIT_S": "45",
        "ECHO_VISIBILITY_TIMEOUT_S": "50",
    }
    api = start_api(env)
    doomed = start_worker(env)
    # (100 steps: seconds of work, so the kill lands mid-render)
    job = submit(api, overrides={"num_steps": 100})
    wait_for(lambda: get(api, job["id"])["progress"]["step"] >= 1, timeout=120, what="the first step")
    # When the worker is killed with SIGKILL mid-render, and a new worker starts
    doomed.kill()
    killed_at = time.monotonic()
    assert get(api, job["id"])["status"] == "running"
    start_worker(env)
    # Then the job comes back after the visibility timeout and succeeds
    done = finish(api, job["id"], timeout=240)
    assert done["status"] == "succeeded", done["error"]
    assert time.monotonic() - killed_at >= 30  # re-delivered by the broker, not by luck
    # And exactly once: one audio object and its description, the record delivered twice
    storage = S3Storage(StorageSettings.from_env(env))
    key = done["result"]["url"].split("?")[0].split(env["ECHO_S3_BUCKET"] + "/")[1]
    assert sorted(storage.list_keys(f"jobs/{job['id']}/")) == sorted([key, f"jobs/{job['id']}/result.json"])
    from jobs.jobstore import JobStore

    assert JobStore.from_url(env["ECHO_REDIS_URL"]).get(job["id"]).attempts == 2  # type: ignore[union-attr]


def _reference_wav(seconds: float = 1.5) -> bytes:
    import numpy as np

    t = np.arange(int(44100 * seconds)) / 44100
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 220 * t)).astype("float32"), 44100, format="WAV")
    return buffer.getvalue()


def test_a_stored_voice_is_encoded_once_and_a_one_shot_reference_renders_too(
    service_env: dict, start_worker, start_api
) -> None:
    # Given the API, a worker, and a voice uploaded once
    api = start_api(service_env)
    worker = start_worker(service_env)
    created = requests.post(
        f"{api.url}/v1/voices",
        files={"file": ("ann.wav", _reference_wav(), "audio/wav")},
        data={"name": "Ann"},
        timeout=10,
    )
    assert created.status_code == 202, created.text
    voice_id = created.json()["id"]

    def voice_state() -> str | None:
        status = requests.get(f"{api.url}/v1/voices/{voice_id}", timeout=10).json()["status"]
        return None if status == "pending" else str(status)

    # When the worker has encoded it and two jobs use it
    assert wait_for(voice_state, timeout=120, what="the voice to be encoded") == "ready"
    jobs = [submit(api, voice=voice_id, seed=seed) for seed in (1, 2)]
    # And a third job brings its own one-shot reference
    upload = {"speaker_audio": ("me.wav", _reference_wav(1.0), "audio/wav")}
    one_shot = requests.post(
        f"{api.url}/v1/jobs",
        files=upload,
        data={"text": "Mine.", "seed": "3", "overrides": '{"num_steps": 2}'},
        timeout=10,
    )
    assert one_shot.status_code == 202, one_shot.text
    # Then all succeed, the latents are stored, and the stored voice was encoded exactly once
    for job in [*jobs, one_shot.json()]:
        assert finish(api, job["id"])["status"] == "succeeded"
    storage = S3Storage(StorageSettings.from_env(service_env))
    assert storage.exists(f"voices/{voice_id}/latents.safetensors")
    assert worker.output().count(f"voice {voice_id} encoded") == 1


def test_a_worker_with_fitted_canvases_renders_and_repeats_exactly(service_env: dict, start_worker, start_api) -> None:
    # Given a worker with ECHO_CANVAS=auto (each piece's canvas fitted to its text)
    env = service_env | {"ECHO_CANVAS": "auto"}
    api = start_api(env)
    start_worker(env)
    # When the same short job is rendered twice
    first, second = (finish(api, submit(api, format="wav")["id"]) for _ in range(2))
    # Then both succeed with the same samples, and the record says which canvas each piece used
    assert first["status"] == second["status"] == "succeeded", first["error"]
    assert download(first) == download(second)
    from jobs.jobstore import JobStore

    record = JobStore.from_url(env["ECHO_REDIS_URL"]).get(first["id"])
    assert record is not None and record.result is not None
    (piece,) = record.result["pieces"]
    assert piece["canvas_latents"] in (128, 192, 256, 320, 384, 448, 512, 640) and piece["canvas_retries"] >= 0
