"""Shared fixtures for the service tests: real Redis, a real S3 server on loopback, a tiny
checkpoint made with the real CLI, and real ``python -m worker`` processes.

Everything here starts real processes or servers; in-memory doubles live in the unit tests.
- ``redis_url``: a ``redis-server`` on a free port for the session, flushed before each test.
- ``s3_endpoint`` / ``storage_settings``: moto's ThreadedMotoServer on 127.0.0.1, one fresh
  bucket per test.
- ``tiny_checkpoint``: ``python -m echo_tts.testing make-checkpoint DIR --size tiny`` once per
  session (skips while the model library has not landed).
- ``service_env``: the environment a worker or API process needs for the above.
- ``start_worker``: starts ``python -m worker`` with that environment, waits for its heartbeat,
  and stops it (SIGTERM, then SIGKILL) at teardown.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from worker import contract
from worker.settings import StorageSettings

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], object], *, timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        pytest.fail("redis-server is not installed (make test installs it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_bucket() -> str:
    return f"echo-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def storage_settings(s3_endpoint: str, s3_bucket: str) -> StorageSettings:
    env = {"ECHO_S3_ENDPOINT_URL": s3_endpoint, "ECHO_S3_BUCKET": s3_bucket, **S3_CREDENTIALS}
    return StorageSettings.from_env(env)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        for module in ("echo_tts.pipeline", "echo_tts.testing"):
            importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"the model library has not landed yet ({exc})")
    target = tmp_path_factory.mktemp("checkpoint")
    done = subprocess.run(
        [PYTHON, "-m", "echo_tts.testing", "make-checkpoint", str(target), "--size", "tiny"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture
def service_env(redis_url: str, s3_endpoint: str, s3_bucket: str, tiny_checkpoint: Path) -> dict[str, str]:
    """Settings for worker and API processes: this test's Redis, bucket and the tiny checkpoint."""
    return {
        "ECHO_REDIS_URL": redis_url,
        "ECHO_S3_ENDPOINT_URL": s3_endpoint,
        "ECHO_S3_BUCKET": s3_bucket,
        **S3_CREDENTIALS,
        "ECHO_MODEL_REPO": str(tiny_checkpoint / "echo-tts-base"),
        "ECHO_AE_REPO": str(tiny_checkpoint / "fish-s1-dac-min"),
        "ECHO_DEVICE": "cpu",
        "ECHO_DTYPE": "float32",
        "ECHO_AE_DTYPE": "float32",
        # Short limits so a killed worker's task is re-delivered within the test's patience.
        "ECHO_TASK_SOFT_TIME_LIMIT_S": "20",
        "ECHO_TASK_TIME_LIMIT_S": "25",
        "ECHO_VISIBILITY_TIMEOUT_S": "30",
        "ECHO_UNACKED_RESTORE_INTERVAL_S": "1",
    }


def process_env(settings: dict[str, str]) -> dict[str, str]:
    """A clean child environment: PATH and friends, no ECHO_/AWS_ leakage, plus ``settings``."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "AWS_", "HF_"))}
    keep["PYTHONUNBUFFERED"] = "1"
    keep.setdefault("HF_HUB_OFFLINE", "1")
    return keep | settings


def submit_task(redis_url: str, name: str, kwargs: dict, *, queue: str = contract.QUEUE_INTERACTIVE,
                task_id: str | None = None) -> None:
    """Send a task by name as the API does (a producer-only Celery app, JSON)."""
    from celery import Celery

    client = Celery("test-producer", broker=redis_url, set_as_current=False)
    client.conf.update(task_serializer="json", accept_content=["json"])
    try:
        client.send_task(name, kwargs=kwargs, queue=queue, task_id=task_id)
    finally:
        client.close()


@dataclass
class WorkerProcess:
    """A running ``python -m worker`` subprocess and its log file."""

    proc: subprocess.Popen[bytes]
    log: Path
    name: str
    redis_url: str
    stopped: bool = field(default=False)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, nothing acked, nothing restored by the worker itself."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.stopped = True

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.stopped = True
        return int(self.proc.returncode)


def heartbeat(redis_url: str, name: str) -> dict | None:
    raw = redis.Redis.from_url(redis_url).get(contract.heartbeat_key(name))
    return json.loads(raw) if raw else None


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], *, queues: str | None = None, wait: bool = True) -> WorkerProcess:
        name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        log = tmp_path / f"worker-{len(started)}.log"
        args = [PYTHON, "-m", "worker", "--hostname", name, "--loglevel", "INFO"]
        if queues:
            args += ["--queues", queues]
        with log.open("wb") as out:
            proc = subprocess.Popen(args, cwd=ROOT, env=process_env(env), stdout=out, stderr=subprocess.STDOUT)
        worker = WorkerProcess(proc, log, name, env["ECHO_REDIS_URL"])
        started.append(worker)
        if wait:
            def up() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"worker exited with {proc.returncode}:\n{worker.output()}")
                return heartbeat(worker.redis_url, name) is not None

            wait_for(up, timeout=120, what=f"worker {name} heartbeat", interval=0.2)
        return worker

    yield start
    for worker in started:
        if not worker.stopped:
            worker.stop()


@dataclass
class ApiProcess:
    """A running ``python -m api --bind 127.0.0.1:PORT`` (gunicorn) and its base URL."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    """Starts the API helper's entry point with the given settings; waits for /healthz."""
    import requests

    started: list[ApiProcess] = []

    def start(env: dict[str, str]) -> ApiProcess:
        port = free_port()
        log = tmp_path / f"api-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([PYTHON, "-m", "api", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
                                    cwd=ROOT, env=process_env(env), stdout=out, stderr=subprocess.STDOUT)
        api = ApiProcess(proc, f"http://127.0.0.1:{port}", log)
        started.append(api)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"api exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                return requests.get(api.url + "/healthz", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, timeout=60, what="the API's /healthz", interval=0.1)
        return api

    yield start
    for api in started:
        if api.proc.poll() is None:
            api.proc.terminate()
            try:
                api.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                api.proc.kill()
                api.proc.wait(timeout=10)
