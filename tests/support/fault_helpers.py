"""Helpers for the fault-injection tests of ``tests/reliability``: a moto S3 server that logs every request
it serves (to count uploads per key), and the HTTP calls those tests make against ``python -m api``.

The request log is moto's own recorder (``MOTO_ENABLE_RECORDING``), in a ``python -m moto.server``
process of its own, so the count covers every request any worker made, whatever process made it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import requests
from service_helpers import PYTHON, ROOT, free_port, process_env, wait_for

from jobs.contract import TERMINAL_STATES

RELIABILITY = os.environ.get("ECHO_RELIABILITY") == "1"  # `make reliability`: the long versions


@dataclass
class RecordedS3:
    """A moto S3 server whose every request lands, one JSON line each, in ``log``."""

    url: str
    log: Path
    proc: subprocess.Popen[bytes]

    def uploads(self, bucket: str) -> Counter[str]:
        """Object uploads per key in ``bucket``: PutObject calls and completed multipart uploads (the
        parts of one multipart upload count once, at its completion)."""
        counts: Counter[str] = Counter()
        if not self.log.exists():
            return counts
        for line in self.log.read_text().splitlines():
            entry = json.loads(line)
            parts = urlsplit(entry["url"])
            query = parse_qs(parts.query, keep_blank_values=True)
            bucket_name, _, key = unquote(parts.path).lstrip("/").partition("/")
            if bucket_name != bucket or not key:
                continue
            headers = {k.lower(): v for k, v in entry["headers"].items()}
            put_object = entry["method"] == "PUT" and not query and "x-amz-copy-source" not in headers
            completed = entry["method"] == "POST" and "uploadId" in query
            if put_object or completed:
                counts[key] += 1
        return counts


@contextmanager
def recorded_s3_server(workdir: Path) -> Iterator[RecordedS3]:
    """Start ``python -m moto.server`` on a free loopback port with its request recorder on."""
    port = free_port()
    log = workdir / "s3-requests.jsonl"
    env = process_env({"MOTO_ENABLE_RECORDING": "1", "MOTO_RECORDER_FILEPATH": str(log)})
    with (workdir / "moto.log").open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = RecordedS3(f"http://127.0.0.1:{port}", log, proc)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"moto exited with {proc.returncode}")
        try:
            return requests.get(server.url + "/moto-api/", timeout=2).status_code < 500
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, timeout=60, what="the recording moto server", interval=0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --- the API over HTTP (auth off in these stacks unless a test sets ECHO_API_KEYS) -----------------


def submit_job(url: str, **body: Any) -> dict[str, Any]:
    defaults = {"text": "Hello there, world.", "seed": 5, "overrides": {"num_steps": 2}}
    answer = requests.post(f"{url}/v1/jobs", json=defaults | body, timeout=15)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def get_job(url: str, job_id: str) -> dict[str, Any]:
    answer = requests.get(f"{url}/v1/jobs/{job_id}", timeout=15)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def finish_job(url: str, job_id: str, timeout: float = 180) -> dict[str, Any]:
    return _final(lambda: get_job(url, job_id), f"job {job_id}", timeout)


def get_book(url: str, book_id: str) -> dict[str, Any]:
    answer = requests.get(f"{url}/v1/audiobooks/{book_id}", timeout=15)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def finish_book(url: str, book_id: str, timeout: float = 300) -> dict[str, Any]:
    return _final(lambda: get_book(url, book_id), f"audiobook {book_id}", timeout)


def _final(read: Callable[[], dict[str, Any]], what: str, timeout: float) -> dict[str, Any]:
    """``read()`` once it reports a final status (polled every 0.2 s for at most ``timeout`` s)."""

    def done() -> dict[str, Any] | None:
        view = read()
        return view if view["status"] in TERMINAL_STATES else None

    view = wait_for(done, timeout=timeout, what=what, interval=0.2)
    assert isinstance(view, dict)
    return view


# --- Redis with an append-only file, killed and restarted on the same port and directory ---------


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)

        def ready() -> bool:
            try:
                return bool(client.ping())
            except (redis.ConnectionError, redis.BusyLoadingError):
                return False

        wait_for(ready, timeout=10, what="redis-server")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
