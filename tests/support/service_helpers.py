"""Plain helpers for the worker/service tests (the fixtures that use them are in ``service_fixtures.py``).

Test modules import them as ``from service_helpers import ...`` (``tests/support`` is on the path,
as for ``api_helpers``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from jobs import contract

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


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def process_env(settings: dict[str, str]) -> dict[str, str]:
    """A clean child environment: PATH and friends, no ECHO_/AWS_ leakage, plus ``settings``."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "AWS_", "HF_"))}
    keep["PYTHONUNBUFFERED"] = "1"
    keep.setdefault("HF_HUB_OFFLINE", "1")
    return keep | settings


def submit_task(
    redis_url: str, name: str, kwargs: dict, *, queue: str = contract.QUEUE_INTERACTIVE, task_id: str | None = None
) -> None:
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


@dataclass
class ApiProcess:
    """A running ``python -m api --bind 127.0.0.1:PORT`` (gunicorn) and its base URL."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


# --- starting the real processes ---------------------------------------------------------------------


def tiny_stack_env(redis_url: str, s3_endpoint: str, bucket: str, checkpoint: Path) -> dict[str, str]:
    """What a worker or API process needs to run on this Redis and bucket with the tiny checkpoint (CPU)."""
    return {
        "ECHO_REDIS_URL": redis_url,
        "ECHO_S3_ENDPOINT_URL": s3_endpoint,
        "ECHO_S3_BUCKET": bucket,
        **S3_CREDENTIALS,
        "ECHO_MODEL_REPO": str(checkpoint / "echo-tts-base"),
        "ECHO_AE_REPO": str(checkpoint / "fish-s1-dac-min"),
        "ECHO_DEVICE": "cpu",
        "ECHO_DTYPE": "float32",
        "ECHO_AE_DTYPE": "float32",
    }


def spawn_worker(env: dict[str, str], log: Path, name: str, *, queues: str | None = None) -> WorkerProcess:
    """``python -m worker --hostname name`` with its output in ``log``; not waited for (see :func:`started`)."""
    args = [PYTHON, "-m", "worker", "--hostname", name, "--loglevel", "INFO"]
    if queues:
        args += ["--queues", queues]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=process_env(env), stdout=out, stderr=subprocess.STDOUT)
    return WorkerProcess(proc, log, name, env["ECHO_REDIS_URL"])


def spawn_api(env: dict[str, str], log: Path, *, workers: int) -> ApiProcess:
    """``python -m api`` (gunicorn, ``workers`` processes) on a free loopback port; not waited for."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "api", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
            cwd=ROOT,
            env=process_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return ApiProcess(proc, f"http://127.0.0.1:{port}", log)


def started(process: WorkerProcess | ApiProcess) -> bool:
    """Whether a spawned process is serving: this very worker's heartbeat (a killed namesake's may
    linger), or the API's /healthz. A process that exited fails the test with its log."""
    import requests

    if process.proc.poll() is not None:
        raise AssertionError(f"{process.proc.args} exited with {process.proc.returncode}:\n{process.output()}")
    if isinstance(process, WorkerProcess):
        beat = heartbeat(process.redis_url, process.name)
        return beat is not None and beat.get("pid") == process.proc.pid
    try:
        return requests.get(process.url + "/healthz", timeout=5).status_code == 200
    except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow on a busy machine
        return False
