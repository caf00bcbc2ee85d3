"""Helpers for the job store and API tests (plain functions; the fixtures are in ``api_fixtures``)."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import redis
import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a child process: ours without ECHO_*/AWS_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "AWS_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
API_KEYS = {"alice": "alice-token-0001", "bob": "bob-token-0002"}
LIMITS = {"ECHO_MAX_TEXT_CHARS": "2000", "ECHO_MAX_UPLOAD_BYTES": "300000", "ECHO_MAX_REFERENCE_SECONDS": "30"}


@dataclass
class ApiServer:
    """A ``python -m api`` process on a loopback port; ``call`` sends as one of the API_KEYS names."""

    url: str
    proc: subprocess.Popen
    log: Path
    env: dict[str, str]
    session: requests.Session = field(default_factory=requests.Session)

    def call(self, method: str, path: str, *, as_: str | None = "alice", **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if as_ is not None:
            headers.setdefault("Authorization", f"Bearer {API_KEYS[as_]}")
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def bucket(self) -> str:
        return self.env["ECHO_S3_BUCKET"]

    def s3(self) -> Any:
        return s3_client(self.env["ECHO_S3_ENDPOINT_URL"])


def start_api_process(env: dict[str, str], log: Path, *, workers: int = 1) -> ApiServer:
    """Start ``python -m api`` and wait until its app answers /healthz (the app is built in the worker)."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
            cwd=ROOT,
            env=child_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = ApiServer(f"http://127.0.0.1:{port}", proc, log, env)
    deadline = time.monotonic() + 30
    while True:
        try:
            if server.call("GET", "/healthz", as_=None).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"the API did not come up (exit {proc.returncode}):\n{server.output()}")
        time.sleep(0.1)


def wav_bytes(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """A valid mono 16-bit WAV of a quiet tone."""
    frames = int(seconds * rate)
    samples = b"".join(int(3000 * math.sin(i / 8)).to_bytes(2, "little", signed=True) for i in range(frames))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples)
    return out.getvalue()


def queued_tasks(client: redis.Redis, queue: str = "tts") -> list[dict[str, Any]]:
    """The Celery messages waiting in ``queue`` (kombu's Redis list), oldest first, as
    ``{"task", "id", "kwargs"}``: what a worker would receive."""
    out = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _args, kwargs, _embed = json.loads(body)
        out.append({"task": message["headers"]["task"], "id": message["headers"]["id"], "kwargs": kwargs})
    return out


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def while_waiting(client: redis.Redis, act: Callable[[str], None]) -> threading.Thread:
    """Start a thread that, once the (only) job's record exists, does ``act(job_id)``: the test plays the
    worker or another client while a request waits for that job."""
    from service_helpers import wait_for

    def run() -> None:
        def job_id() -> str | None:
            keys = [k if isinstance(k, str) else k.decode() for k in client.keys("echo:job:*")]
            return keys[0].split(":", 2)[2] if keys else None

        act(str(wait_for(job_id, timeout=20, what="the job")))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
