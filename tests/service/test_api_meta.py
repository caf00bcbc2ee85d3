"""Health, readiness, the OpenAPI document, auth, error envelopes for routing errors, settings at
start, and local storage — over real HTTP."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
import redis
from api_helpers import ROOT, ApiServer, child_env, wav_bytes

from api.schemas import Job, JobCreate
from jobs import contract
from jobs.jobstore import JobStore

pytest_plugins = ["api_fixtures"]


def test_healthz_answers_without_a_key(api: ApiServer) -> None:
    # Given / When liveness is asked without credentials, Then it is ok
    response = api.call("GET", "/healthz", as_=None)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_is_503_without_a_worker_and_200_with_a_heartbeat(api: ApiServer, api_redis_url: str) -> None:
    # Given Redis and storage up but no worker
    missing = api.call("GET", "/readyz", as_=None)
    # When a worker writes its heartbeat
    JobStore.from_url(api_redis_url).heartbeat("gpu0@host", {"queues": ["tts"]})
    ready = api.call("GET", "/readyz", as_=None)
    # Then readiness went from 503 naming the missing workers to 200
    assert missing.status_code == 503
    error = missing.json()["error"]
    assert error["code"] == "not_ready" and "workers" in error["message"]
    assert error["details"]["checks"]["redis"] == "ok" and error["details"]["checks"]["storage"] == "ok"
    assert ready.status_code == 200 and ready.json()["checks"]["workers"] == 1


def test_readyz_is_503_naming_storage_when_the_bucket_is_unreachable(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], api_redis_url: str, redis_client: redis.Redis
) -> None:
    # Given an API whose bucket was deleted after it started (it makes a missing one at start), and a
    # live worker
    api = launch_api({**api_env, "ECHO_S3_BUCKET": "no-such-bucket"})
    api.s3().delete_bucket(Bucket="no-such-bucket")
    JobStore.from_url(api_redis_url).heartbeat("gpu0@host")
    # When readiness is asked, Then storage is named as failing, and its check names the missing bucket
    response = api.call("GET", "/readyz", as_=None)
    assert response.status_code == 503 and "storage" in response.json()["error"]["message"]
    storage_check = response.json()["error"]["details"]["checks"]["storage"]
    assert "bucket 'no-such-bucket' does not exist" in storage_check and "no object" not in storage_check


def test_the_api_makes_a_missing_bucket_at_start_so_uploads_work_before_any_worker(
    launch_api: Callable[..., ApiServer], api_env: dict[str, str], redis_client: redis.Redis
) -> None:
    # Given an S3 endpoint without the configured bucket, and no worker ever started
    bucket = f"fresh-{uuid.uuid4().hex[:10]}"
    # When the API starts and a voice is uploaded
    api = launch_api({**api_env, "ECHO_S3_BUCKET": bucket})
    answer = api.call("POST", "/v1/voices", files={"file": ("ann.wav", wav_bytes())})
    # Then the upload is accepted and its reference is in the bucket the API made
    assert answer.status_code == 202, answer.text
    keys = [o["Key"] for o in api.s3().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"voices/{answer.json()['id']}/reference.wav"]


def test_openapi_is_generated_from_the_validating_models(api: ApiServer) -> None:
    # Given / When the spec is fetched without credentials
    spec = api.call("GET", "/v1/openapi.json", as_=None).json()
    # Then it is OpenAPI 3.1 with every endpoint, and its schemas are the pydantic models' own
    assert spec["openapi"].startswith("3.1")
    assert {
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/audio",
        "/v1/voices",
        "/v1/voices/{id}",
        "/healthz",
        "/readyz",
        "/v1/openapi.json",
    } <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert schemas["JobCreate"]["properties"]["text"] == JobCreate.model_json_schema()["properties"]["text"]
    assert set(schemas["Overrides"]["properties"]) == set(contract.OVERRIDE_NAMES)
    assert schemas["Overrides"]["properties"]["num_steps"]["maximum"] == contract.OVERRIDE_BOUNDS["num_steps"].maximum
    assert set(schemas["JobCreate"]["properties"]["format"]["enum"]) == set(contract.OUTPUT_FORMATS)
    assert schemas["JobCreate"]["properties"]["preset"]["enum"] == list(contract.PRESET_NAMES)
    assert "ECHO_MAX_TEXT_CHARS" in schemas["JobCreate"]["properties"]["text"]["description"]


# Statuses the API answers that the document must list (schemathesis flags an undocumented one).
DOCUMENTED = [
    ("/readyz", "get", "503"),
    ("/v1/jobs/{id}/audio", "get", "409"),
    ("/v1/jobs/{id}/audio", "get", "410"),
    *(("/v1/jobs", "post", status) for status in ("400", "409", "413", "415", "422")),
    *(("/v1/audio/speech", "post", status) for status in ("400", "415", "422", "504")),
    ("/v1/voices", "post", "415"),
]


def test_the_openapi_document_lists_every_status_the_api_answers(api: ApiServer) -> None:
    # Given the published document
    spec = api.call("GET", "/v1/openapi.json", as_=None).json()
    # When every operation's responses are walked
    listed = {
        (path, method, status)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        for status in op["responses"]
    }
    # Then the statuses those routes answer are there, errors with the envelope, and 431 on every operation
    assert [entry for entry in DOCUMENTED if entry not in listed] == []
    for path, method, status in listed:
        if status.startswith(("4", "5")):
            schema = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (path, method, status)
    operations = {(path, method) for path, method, _ in listed}
    assert {(path, method) for path, method, status in listed if status == "431"} == operations


def test_oversized_headers_are_431_with_the_envelope_naming_the_limit(api: ApiServer) -> None:
    # Given a header field of 20,000 bytes (over 8190 per field), and 150 small header fields (over 100)
    long_field = {"X-Padding": "a" * 20_000}
    many_fields = {f"X-Field-{n}": "x" for n in range(150)}
    # When requests carry them, over real HTTP through gunicorn
    long_answer = api.call("GET", "/v1/jobs", headers=long_field)
    many_answer = api.call("GET", "/healthz", as_=None, headers=many_fields)
    # Then both are 431 with the JSON envelope (not gunicorn's HTML page) naming the limit
    for answer, limit in ((long_answer, "MAX_HEADER_FIELD_BYTES=8190"), (many_answer, "MAX_HEADER_FIELDS=100")):
        assert answer.status_code == 431 and answer.headers["Content-Type"] == "application/json", answer.text
        error = answer.json()["error"]
        assert error["code"] == "headers_too_large" and limit in error["message"]
    assert long_answer.json()["error"]["details"]["header"] == "X-Padding"
    # And headers within the limits still pass
    assert api.call("GET", "/v1/jobs", headers={"X-Padding": "a" * 8000}).status_code == 200


def test_a_job_as_served_matches_the_published_schema(api: ApiServer) -> None:
    # Given the spec and a served job
    spec = api.call("GET", "/v1/openapi.json", as_=None).json()
    job = api.call("POST", "/v1/jobs", json={"text": "Hi."}).json()
    # When the job is checked against the Job schema, Then it conforms (and pydantic agrees)
    schema = {**spec["components"]["schemas"]["Job"], "components": spec["components"]}  # refs resolve here
    jsonschema.validate(job, schema)
    Job.model_validate(job)


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-123", "Basic alice-token-0001", "Bearer"])
def test_v1_needs_a_known_bearer_key(api: ApiServer, header: str | None) -> None:
    # Given / When /v1 is called without a key, with an unknown one, or with another scheme
    headers = {"Authorization": header} if header else {}
    response = api.call("GET", "/v1/jobs", as_=None, headers=headers)
    # Then it is 401 with the envelope and a challenge
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_routes_and_methods_answer_with_the_envelope(api: ApiServer) -> None:
    # Given / When an unknown path and a wrong method are used
    missing = api.call("GET", "/v1/nothing-here")
    wrong = api.call("PUT", "/v1/jobs")
    # Then both answer with the envelope
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ECHO_REDIS_URL": ""}, "ECHO_REDIS_URL"),
        ({"ECHO_REDIS_URL": "http://localhost"}, "ECHO_REDIS_URL"),
        ({"ECHO_API_KEYS": "alice"}, "ECHO_API_KEYS"),
        ({"ECHO_API_KEYS": "alice:same-token-1,bob:same-token-1"}, "ECHO_API_KEYS"),
        ({"ECHO_MAX_TEXT_CHARS": "lots"}, "ECHO_MAX_TEXT_CHARS"),
        ({"ECHO_MAX_UPLOAD_BYTES": "-5"}, "ECHO_MAX_UPLOAD_BYTES"),
        ({"ECHO_VOICES_DIR": "/no/such/dir"}, "ECHO_VOICES_DIR"),
        ({"ECHO_S3_ENDPOINT_URL": "minio:9000"}, "ECHO_S3_ENDPOINT_URL"),
        ({"ECHO_S3_BUCKET": "qa"}, "ECHO_S3_BUCKET"),
    ],
)
def test_a_bad_setting_stops_the_api_at_start_naming_it(api_env: dict[str, str], env: dict, named: str) -> None:
    # Given a bad setting
    settings = {**api_env, **env}
    # When the API is started
    done = subprocess.run(
        [sys.executable, "-m", "api", "--bind", "127.0.0.1:1"],
        cwd=ROOT,
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then it exits at once with a message naming the setting (no traceback)
    assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr


def test_without_api_keys_auth_is_off_and_audio_streams_from_local_storage(
    launch_api: Callable[..., ApiServer], api_redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given an API without keys and without S3: local storage in a directory
    api = launch_api({"ECHO_REDIS_URL": api_redis_url, "ECHO_STORAGE_DIR": str(tmp_path)})
    job = api.call("POST", "/v1/jobs", json={"text": "Local.", "format": "wav"}, as_=None).json()
    # When a worker finished the job into that directory
    store = JobStore.from_url(api_redis_url)
    store.mark_running(job["id"])
    key = contract.job_audio_key(job["id"], "wav")
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_bytes(wav_bytes())
    store.succeed(job["id"], {"key": key, "duration_s": 0.5})
    # Then the job belongs to "local", its URL is the API's own, and the API streams the file
    assert store.get(job["id"], owner="local") is not None
    url = api.call("GET", f"/v1/jobs/{job['id']}", as_=None).json()["result"]["url"]
    assert url == f"{api.url}/v1/jobs/{job['id']}/audio"
    audio = api.call("GET", f"/v1/jobs/{job['id']}/audio", as_=None)
    assert audio.status_code == 200 and audio.content == wav_bytes()
    assert audio.headers["Content-Type"] == "audio/wav"
    # And once the file is gone (e.g. lifecycle expiry), the API says so instead of failing
    (tmp_path / key).unlink()
    gone = api.call("GET", f"/v1/jobs/{job['id']}/audio", as_=None)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "audio_gone"
