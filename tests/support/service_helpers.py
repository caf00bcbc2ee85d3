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
