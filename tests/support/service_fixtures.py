"""Shared fixtures for the service and reliability tests (registered by ``tests/conftest.py``): real Redis,
a real S3 server on loopback, a tiny checkpoint made with the real CLI, and real ``python -m worker`` processes.

Everything here starts real processes or servers; in-memory doubles live in the unit tests.
- ``redis_url``: a ``redis-server`` on a free port for the session, flushed before each test.
- ``s3_endpoint`` / ``storage_settings``: moto's ThreadedMotoServer on 127.0.0.1, one fresh
  bucket per test.
- ``tiny_checkpoint``: ``python -m echo_tts.testing make-checkpoint DIR --size tiny`` once per
  session (the real CLI; a failure fails the tests that need it).
- ``service_env``: the environment a worker or API process needs for the above.
- ``start_worker``: starts ``python -m worker`` with that environment, waits for its heartbeat,
  and stops it (SIGTERM, then SIGKILL) at teardown.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from service_helpers import (
    PYTHON,
    ROOT,
    S3_CREDENTIALS,
    ApiProcess,
    WorkerProcess,
    free_port,
    spawn_api,
    spawn_worker,
    started,
    tiny_stack_env,
    wait_for,
)

from jobs.settings import StorageSettings


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        pytest.fail("redis-server is not installed (make test installs it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def ready() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_for(ready, timeout=10, what="redis-server")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request is noise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket() -> str:
    return f"echo-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def storage_settings(s3_endpoint: str, s3_bucket: str) -> StorageSettings:
    env = {"ECHO_S3_ENDPOINT_URL": s3_endpoint, "ECHO_S3_BUCKET": s3_bucket, **S3_CREDENTIALS}
    return StorageSettings.from_env(env)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("checkpoint")
    done = subprocess.run(
        [PYTHON, "-m", "echo_tts.testing", "make-checkpoint", str(target), "--size", "tiny"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture
def service_env(redis_url: str, s3_endpoint: str, s3_bucket: str, tiny_checkpoint: Path) -> dict[str, str]:
    """Settings for worker and API processes: this test's Redis, bucket and the tiny checkpoint."""
    return tiny_stack_env(redis_url, s3_endpoint, s3_bucket, tiny_checkpoint) | {
        # Short limits so a killed worker's task is re-delivered within the test's patience.
        "ECHO_TASK_SOFT_TIME_LIMIT_S": "20",
        "ECHO_TASK_TIME_LIMIT_S": "25",
        "ECHO_VISIBILITY_TIMEOUT_S": "30",
        "ECHO_UNACKED_RESTORE_INTERVAL_S": "1",
    }


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started_workers: list[WorkerProcess] = []

    def start(
        env: dict[str, str], *, queues: str | None = None, wait: bool = True, name: str | None = None
    ) -> WorkerProcess:
        """``name``: the worker's --hostname (default: a fresh one); reuse a killed worker's name to
        restart it as a container restart would."""
        name = name or f"test-{uuid.uuid4().hex[:8]}@localhost"
        worker = spawn_worker(env, tmp_path / f"worker-{len(started_workers)}.log", name, queues=queues)
        started_workers.append(worker)
        if wait:
            wait_for(lambda: started(worker), timeout=120, what=f"worker {name} heartbeat", interval=0.2)
        return worker

    yield start
    for worker in started_workers:
        if not worker.stopped:
            worker.stop()


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    """Starts the API helper's entry point with the given settings; waits for /healthz."""
    started_apis: list[ApiProcess] = []

    def start(env: dict[str, str]) -> ApiProcess:
        api = spawn_api(env, tmp_path / f"api-{len(started_apis)}.log", workers=2)
        started_apis.append(api)
        wait_for(lambda: started(api), timeout=60, what="the API's /healthz", interval=0.1)
        return api

    yield start
    for api in started_apis:
        if api.proc.poll() is None:
            api.proc.terminate()
            try:
                api.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                api.proc.kill()
                api.proc.wait(timeout=10)
