"""POST/GET/DELETE /v1/jobs over real HTTP: a gunicorn API on real Redis and the moto S3 server."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import redis
import requests
from api_helpers import ApiServer, queued_tasks, wav_bytes

from jobs import contract
from jobs.jobstore import JobStore

pytest_plugins = ["api_fixtures"]


def submit(api: ApiServer, body: dict | None = None, **kwargs: object) -> requests.Response:
    return api.call("POST", "/v1/jobs", json={"text": "Hello there.", **(body or {})}, **kwargs)


def test_a_submitted_job_answers_202_with_location_and_is_enqueued_by_name(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    # Given / When alice submits a sentence
    response = submit(
        api, {"format": "flac", "preset": "Independent-Low-CFG", "overrides": {"num_steps": 8}, "metadata": {"ref": 1}}
    )
    # Then the API answers at once with the queued job and where to poll it
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["result"] is None and job["created_at"].endswith("Z")
    assert job["request"]["format"] == "flac" and job["request"]["overrides"] == {"num_steps": 8}
    assert isinstance(job["request"]["seed"], int)
    # And one synthesis task waits on the interactive queue, its id the job's, its kwargs the contract's
    (task,) = queued_tasks(redis_client, contract.QUEUE_INTERACTIVE)
    assert task["task"] == contract.SYNTHESIZE and task["id"] == job["id"]
    request = contract.SynthesisRequest.from_dict(task["kwargs"])
    assert request.owner == "alice" and request.seed == job["request"]["seed"] and request.metadata == {"ref": 1}
    # And the job is out of the outbox (a worker would send a job left there: worker.recovery.send_unsent)
    assert redis_client.zcard("echo:outbox") == 0 and redis_client.exists(f"echo:job:{job['id']}")


def test_a_given_seed_is_recorded_and_an_absent_one_is_random(api: ApiServer) -> None:
    # Given / When two jobs without a seed and one with
    seeds = [submit(api).json()["request"]["seed"] for _ in range(2)]
    given = submit(api, {"seed": 1234}).json()
    # Then the given seed is kept and the others differ
    assert given["request"]["seed"] == 1234 and seeds[0] != seeds[1]


def test_long_text_under_the_limit_is_accepted_whole(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given text far longer than one generation (768 bytes) but under ECHO_MAX_TEXT_CHARS=2000
    text = "This sentence is one of many. " * 60
    # When it is submitted
    response = submit(api, {"text": text})
    # Then it is queued untruncated: the worker splits it
    assert response.status_code == 202 and response.json()["request"]["text"] == text
    assert queued_tasks(redis_client)[0]["kwargs"]["text"] == text


def test_polling_shows_progress_result_with_a_fresh_url_and_timings(api: ApiServer, api_redis_url: str) -> None:
    # Given a job that a worker ran and uploaded
    job_id = submit(api, {"format": "wav"}).json()["id"]
    store = JobStore.from_url(api_redis_url)
    store.mark_running(job_id)
    store.update_progress(job_id, fraction=0.5, step=4, total_steps=8, segments_done=0, segments_total=1)
    running = api.call("GET", f"/v1/jobs/{job_id}").json()
    key = contract.job_audio_key(job_id, "wav")
    api.s3().put_object(Bucket=api.bucket, Key=key, Body=wav_bytes(), ContentType="audio/wav")
    store.succeed(job_id, {"key": key, "format": "wav", "duration_s": 0.5, "sample_rate": 16000, "bytes": 123})
    # When alice polls twice
    first = api.call("GET", f"/v1/jobs/{job_id}").json()
    second = api.call("GET", f"/v1/jobs/{job_id}").json()
    # Then she saw progress while running, then the result, timings and a presigned URL that works
    assert running["status"] == "running" and running["progress"]["step"] == 4 and running["started_at"]
    assert first["status"] == "succeeded" and first["progress"]["fraction"] == 1.0 and first["finished_at"]
    assert first["result"]["duration_s"] == 0.5 and first["result"]["bytes"] == 123
    assert set(first["timings"]) >= {"queue_s", "render_s", "rtf"}
    url = first["result"]["url"]
    assert "X-Amz-Signature" in url and urlparse(url).path.endswith(key)
    assert second["result"]["url"]  # presigned on every read
    download = requests.get(url, timeout=10)
    assert download.status_code == 200 and download.content[:4] == b"RIFF"


def test_the_audio_endpoint_redirects_to_storage_once_the_job_succeeded(api: ApiServer, api_redis_url: str) -> None:
    # Given a queued job
    job_id = submit(api).json()["id"]
    # When its audio is asked for before it finished, Then it is not ready yet
    early = api.call("GET", f"/v1/jobs/{job_id}/audio")
    assert early.status_code == 409 and early.json()["error"]["code"] == "not_ready"
    # And once it succeeded, the audio URL redirects to a working presigned URL
    store = JobStore.from_url(api_redis_url)
    store.mark_running(job_id)
    key = contract.job_audio_key(job_id, "wav")
    api.s3().put_object(Bucket=api.bucket, Key=key, Body=wav_bytes())
    store.succeed(job_id, {"key": key, "duration_s": 0.5})
    response = api.call("GET", f"/v1/jobs/{job_id}/audio")
    assert response.status_code == 302
    assert requests.get(response.headers["Location"], timeout=10).content == wav_bytes()


def test_listing_shows_only_own_jobs_newest_first_with_a_cursor(api: ApiServer) -> None:
    # Given three jobs of alice, one canceled, and one of bob
    ids = [submit(api, {"text": f"Job {i}."}).json()["id"] for i in range(3)]
    submit(api, as_="bob")
    api.call("DELETE", f"/v1/jobs/{ids[0]}")
    # When alice lists two at a time
    page = api.call("GET", "/v1/jobs", params={"limit": 2}).json()
    rest = api.call("GET", "/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    # Then she sees her own three, newest first, and the last page has no cursor
    assert [j["id"] for j in page["jobs"] + rest["jobs"]] == ids[::-1] and rest["next_cursor"] is None
    # And a status filter narrows the list
    queued = api.call("GET", "/v1/jobs", params={"status": "queued"}).json()
    assert [j["id"] for j in queued["jobs"]] == ids[:0:-1]
    both = api.call("GET", "/v1/jobs", params={"status": "queued,canceled"}).json()
    assert len(both["jobs"]) == 3


def test_the_same_idempotency_key_and_body_return_the_same_job_once(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given a job submitted with an Idempotency-Key
    first = submit(api, headers={"Idempotency-Key": "order-42"})
    # When the same body is sent again with the key
    again = submit(api, headers={"Idempotency-Key": "order-42"})
    # Then the same job comes back, marked as a replay, and only one task was enqueued
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert len(queued_tasks(redis_client)) == 1


def test_the_same_idempotency_key_with_another_body_is_409(api: ApiServer) -> None:
    # Given a job submitted with an Idempotency-Key
    first = submit(api, headers={"Idempotency-Key": "order-43"}).json()
    # When another body comes with the same key
    response = submit(api, {"text": "Something else."}, headers={"Idempotency-Key": "order-43"})
    # Then it conflicts, naming the first job
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert response.json()["error"]["details"]["job_id"] == first["id"]


def test_cancel_while_queued_cancels_at_once_and_is_idempotent(api: ApiServer, api_redis_url: str) -> None:
    # Given a queued job
    job_id = submit(api).json()["id"]
    # When alice cancels it twice
    first = api.call("DELETE", f"/v1/jobs/{job_id}")
    second = api.call("DELETE", f"/v1/jobs/{job_id}")
    # Then it is canceled both times, and a worker picking up the message would skip it
    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == second.json()["status"] == "canceled"
    assert api.call("GET", f"/v1/jobs/{job_id}").json()["status"] == "canceled"
    assert not JobStore.from_url(api_redis_url).mark_running(job_id)


def test_cancel_while_running_requests_it_and_answers_202(api: ApiServer, api_redis_url: str) -> None:
    # Given a running job
    job_id = submit(api).json()["id"]
    store = JobStore.from_url(api_redis_url)
    store.mark_running(job_id)
    # When alice cancels it
    response = api.call("DELETE", f"/v1/jobs/{job_id}")
    # Then the cancel is requested and the worker will finish it
    assert response.status_code == 202
    assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True
    assert store.is_cancel_requested(job_id)


def test_unknown_ids_and_another_keys_jobs_are_404(api: ApiServer) -> None:
    # Given a job of alice
    job_id = submit(api).json()["id"]
    # When bob reads, cancels or downloads it, or anyone asks for an unknown id
    answers = [
        api.call("GET", f"/v1/jobs/{job_id}", as_="bob"),
        api.call("DELETE", f"/v1/jobs/{job_id}", as_="bob"),
        api.call("GET", f"/v1/jobs/{job_id}/audio", as_="bob"),
        api.call("GET", "/v1/jobs/job_nope"),
    ]
    # Then each is 404 with the envelope, and bob's list is empty
    assert [r.status_code for r in answers] == [404] * 4
    assert all(r.json()["error"]["code"] == "not_found" for r in answers)
    assert api.call("GET", "/v1/jobs", as_="bob").json()["jobs"] == []
    assert api.call("GET", f"/v1/jobs/{job_id}").json()["status"] == "queued"


def test_a_multipart_job_stores_the_reference_under_uploads(api: ApiServer, redis_client: redis.Redis) -> None:
    # Given a one-shot reference clip
    clip = wav_bytes(1.0)
    # When alice submits a multipart job with it
    response = api.call(
        "POST",
        "/v1/jobs",
        data={"text": "Clone me.", "seed": "5", "overrides": json.dumps({"cfg_scale_speaker": 6.0})},
        files={"speaker_audio": ("me.wav", clip, "audio/wav")},
    )
    # Then the job is queued, and the reference lies in storage under the key the task carries
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["request"]["speaker_audio"] is True and job["request"]["seed"] == 5
    kwargs = queued_tasks(redis_client)[0]["kwargs"]
    assert kwargs["speaker_key"] == f"uploads/{job['id']}/reference.wav"
    stored = api.s3().get_object(Bucket=api.bucket, Key=kwargs["speaker_key"])["Body"].read()
    assert stored == clip
