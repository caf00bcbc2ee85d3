"""The container helper scripts: the worker healthcheck follows this host's heartbeat, and the
bucket set-up refuses to run without an S3 endpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import redis
from deploy_support import ROOT


def run_helper(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "AWS_"))}
    return subprocess.run(
        [sys.executable, f"docker/{script}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**base, **env, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )


def test_the_worker_healthcheck_passes_only_while_this_hosts_worker_has_a_live_heartbeat(redis_port: int) -> None:
    # Given Redis with a heartbeat from a worker on another host only
    url = f"redis://127.0.0.1:{redis_port}/3"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.set("echo:heartbeat:echo@elsewhere", json.dumps({"name": "echo@elsewhere", "ts": 1}), ex=30)
    # When the healthcheck runs before and after this host's worker beats
    before = run_helper("worker_healthcheck.py", {"ECHO_REDIS_URL": url})
    mine = f"echo@{socket.gethostname()}"
    client.set(f"echo:heartbeat:{mine}", json.dumps({"name": mine, "ts": 2}), ex=30)
    after = run_helper("worker_healthcheck.py", {"ECHO_REDIS_URL": url})
    client.flushdb()
    # Then it fails first (naming what it saw) and passes once the heartbeat is there
    assert before.returncode == 1 and "echo@elsewhere" in before.stdout
    assert after.returncode == 0, after.stdout + after.stderr


def test_the_worker_healthcheck_fails_when_redis_is_unreachable() -> None:
    # Given a Redis URL nobody listens on
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    # When the healthcheck runs
    done = run_helper("worker_healthcheck.py", {"ECHO_REDIS_URL": url})
    # Then it reports unhealthy without a traceback
    assert done.returncode == 1 and "unhealthy: redis" in done.stdout and "Traceback" not in done.stderr


def test_the_bucket_set_up_refuses_to_run_without_an_s3_endpoint() -> None:
    # Given no ECHO_S3_ENDPOINT_URL (local-directory storage)
    # When the one-shot bucket set-up runs
    done = run_helper("s3_init.py", {})
    # Then it exits 2 and names the missing setting
    assert done.returncode == 2 and "ECHO_S3_ENDPOINT_URL" in done.stderr
