"""The compose stack without Docker: each service's OWN command and environment from compose.yaml
run as a local process, container host names rewritten to loopback stand-ins (redis-server for
`redis`, moto's S3 server for `minio`). A job goes in over HTTP and audio comes out of the bucket.
If compose.yaml drifts from the code (a wrong command, a missing or misnamed setting, a broken
healthcheck), this fails."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests
from deploy_support import (
    ROOT,
    free_port,
    healthcheck_argv,
    load_compose,
    local_argv,
    rewrite,
    service_command,
    service_environment,
    stop,
    wait_until_ok,
)

pytestmark = pytest.mark.slow
FAST = {"overrides": {"num_steps": 2}}  # the wiring is under test, not the sampler: keep CPU renders short


@dataclass
class Stack:
    base_url: str
    token: str
    s3_public: str
    s3_env: dict[str, str]
    logs: dict[str, Path]

    def tail(self) -> str:
        return "\n".join(f"--- {name}\n{path.read_text()[-3000:]}" for name, path in self.logs.items())


def local_env(service: dict, hosts: dict[str, str], container_only: dict[str, str]) -> dict[str, str]:
    """The container's environment on this machine: addresses rewritten, container-only values
    (devices, mount points, hub weights) replaced. Only existing keys are replaced, none added."""
    env = {k: rewrite(v, hosts) for k, v in service_environment(service).items()}
    for key, value in container_only.items():
        if key in env:
            env[key] = value
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**base, **env, "PYTHONPATH": str(ROOT)}  # the images have the packages installed


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_port: int, s3_port: int, tiny_checkpoint: Path
) -> Iterator[Stack]:
    services = load_compose()["services"]
    api_port = free_port()
    hosts = {
        "redis:6379": f"127.0.0.1:{redis_port}",
        "minio:9000": f"127.0.0.1:{s3_port}",
        "localhost:9000": f"127.0.0.1:{s3_port}",
        "0.0.0.0:8000": f"127.0.0.1:{api_port}",
        "127.0.0.1:8000": f"127.0.0.1:{api_port}",
    }
    work = tmp_path_factory.mktemp("deploy-stack")
    (work / "voices").mkdir()
    container_only = {
        "ECHO_MODEL_REPO": str(tiny_checkpoint / "echo-tts-base"),
        "ECHO_AE_REPO": str(tiny_checkpoint / "fish-s1-dac-min"),
        # a CPU here: float32 (bfloat16 matmuls are emulated and slow on CPUs)
        "ECHO_DEVICE": "cpu",
        "ECHO_DTYPE": "float32",
        "HF_HOME": str(work / "hf"),
        "ECHO_VOICES_DIR": str(work / "voices"),
    }
    names = ("s3-init", "worker", "assembler", "api")
    envs = {name: local_env(services[name], hosts, container_only) for name in names}

    # Given the one-shot bucket set-up has run to completion, as compose orders it
    init = subprocess.run(
        local_argv(service_command(services["s3-init"]), hosts),
        env=envs["s3-init"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stdout + init.stderr

    logs = {name: work / f"{name}.log" for name in ("worker", "assembler", "api")}
    procs = []
    try:
        for name in ("worker", "assembler", "api"):
            with logs[name].open("w") as log:
                procs.append(
                    subprocess.Popen(
                        local_argv(service_command(services[name]), hosts),
                        env=envs[name],
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        stack = Stack(
            f"http://127.0.0.1:{api_port}",
            services["api"]["environment"]["ECHO_API_KEYS"].split(":", 1)[1],
            f"http://127.0.0.1:{s3_port}",
            envs["s3-init"],
            logs,
        )
        try:
            wait_until_ok(
                healthcheck_argv(services["api"], hosts), envs["api"], timeout=90, what="api healthcheck", watch=procs
            )
            wait_until_ok(
                healthcheck_argv(services["worker"], hosts),
                envs["worker"],
                timeout=300,
                what="worker healthcheck",
                watch=procs,
            )
            wait_until_ok(
                healthcheck_argv(services["assembler"], hosts),
                envs["assembler"],
                timeout=120,
                what="assembler healthcheck",
                watch=procs,
            )
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{stack.tail()}")
        yield stack
    finally:
        for proc in reversed(procs):
            stop(proc, timeout=30)


def wait_for_job(stack: Stack, session: requests.Session, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = session.get(f"{stack.base_url}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("succeeded", "failed", "canceled", "expired"):
            return job
        time.sleep(0.5)
    pytest.fail(f"job {job_id} still {job['status']} after {timeout} s\n{stack.tail()}")


def test_the_api_reports_ready_with_redis_the_bucket_and_a_live_worker(stack: Stack) -> None:
    # Given the api and worker started from compose.yaml and healthy
    # When the API's readiness endpoint is asked
    ready = requests.get(f"{stack.base_url}/readyz", timeout=10)
    # Then Redis, S3 (the bucket s3-init made) and at least one worker heartbeat are all seen
    assert ready.status_code == 200, ready.text


def test_a_job_submitted_to_the_compose_services_renders_and_downloads_from_the_bucket(stack: Stack) -> None:
    # Given the api and worker running with their compose commands, healthy by their compose healthchecks
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.token}"
    # When a job is submitted over HTTP with the stack's API key and polled until it finishes
    submitted = session.post(
        f"{stack.base_url}/v1/jobs",
        json={"text": "Hello from the compose stack.", "format": "wav", "seed": 7, **FAST},
        timeout=10,
    )
    assert submitted.status_code == 202, submitted.text
    job = wait_for_job(stack, session, submitted.json()["id"])
    # Then it succeeded, and its presigned URL (public endpoint) serves the WAV straight from the bucket
    assert job["status"] == "succeeded", f"{job}\n{stack.tail()}"
    url = job["result"]["url"]
    assert url.startswith(f"{stack.s3_public}/"), url
    audio = requests.get(url, timeout=10)
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF" and audio.content[8:12] == b"WAVE"
    assert len(audio.content) == job["result"]["bytes"]


def test_a_book_renders_on_the_worker_and_is_assembled_on_the_assembler(stack: Stack) -> None:
    # Given the api, the GPU worker and the CPU assembler running with their compose commands
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.token}"
    book = b"# Compose Book\n\n## One\n\nHello there.\n\n## Two\n\nGoodbye now.\n"
    # When a Markdown book is submitted and polled until it finishes
    sent = session.post(
        f"{stack.base_url}/v1/audiobooks",
        files={"file": ("book.md", book)},
        data={"seed": "3", "overrides": '{"num_steps": 2}'},
        timeout=30,
    )
    assert sent.status_code == 202, sent.text
    deadline, done = time.monotonic() + 240, sent.json()
    while done["status"] not in ("succeeded", "failed", "canceled") and time.monotonic() < deadline:
        time.sleep(0.5)
        done = session.get(f"{stack.base_url}/v1/audiobooks/{done['id']}", timeout=10).json()
    # Then it succeeded with two chapters, and its M4B comes from the public S3 endpoint
    assert done["status"] == "succeeded", f"{done}\n{stack.tail()}"
    assert [c["title"] for c in done["chapters"]] == ["One", "Two"]
    assert done["result"]["m4b_url"].startswith(f"{stack.s3_public}/")
    m4b = requests.get(done["result"]["m4b_url"], timeout=30)
    assert m4b.status_code == 200 and m4b.content[4:8] == b"ftyp"


def test_the_audio_link_redirects_to_the_bucket_and_other_keys_are_refused(stack: Stack) -> None:
    # Given a finished job
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.token}"
    body = {"text": "Second one.", "seed": 1, **FAST}
    job_id = session.post(f"{stack.base_url}/v1/jobs", json=body, timeout=10).json()["id"]
    assert wait_for_job(stack, session, job_id)["status"] == "succeeded", stack.tail()
    # When its audio link is fetched with and without the API key
    redirect = session.get(f"{stack.base_url}/v1/jobs/{job_id}/audio", allow_redirects=False, timeout=10)
    anonymous = requests.get(f"{stack.base_url}/v1/jobs/{job_id}", timeout=10)
    # Then the owner is sent to the public S3 endpoint and a caller without a key is refused
    assert redirect.status_code == 302 and redirect.headers["Location"].startswith(stack.s3_public)
    assert anonymous.status_code == 401


def test_the_bucket_init_service_put_expiry_on_the_short_lived_prefixes(stack: Stack) -> None:
    # Given the stack after its s3-init service ran with compose's command and environment
    env = stack.s3_env
    s3 = boto3.client(
        "s3",
        endpoint_url=env["ECHO_S3_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    # When we read the bucket's lifecycle configuration
    rules = s3.get_bucket_lifecycle_configuration(Bucket=env["ECHO_S3_BUCKET"])["Rules"]
    # Then jobs/ and uploads/ expire after the default 7 days
    assert {(r["Filter"]["Prefix"], r["Expiration"]["Days"]) for r in rules} == {("jobs/", 7), ("uploads/", 7)}
