"""Fixtures for the job store and API tests: a real redis-server and the moto S3 server on loopback,
and the API over real HTTP (``python -m api --bind``). Test modules opt in with
``pytest_plugins = ["api_fixtures"]`` and import helpers from ``api_helpers``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import redis
from api_helpers import (
    API_KEYS,
    LIMITS,
    S3_ENV,
    ApiServer,
    free_port,
    s3_client,
    start_api_process,
    stop,
    wait_for_port,
)


@pytest.fixture(scope="session")
def api_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of our own on a free loopback port, for the whole session."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


@pytest.fixture
def redis_client(api_redis_url: str) -> Iterator[redis.Redis]:
    """A client on an emptied database."""
    client = redis.Redis.from_url(api_redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def api_s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port (stands in for MinIO)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def api_bucket(api_s3_endpoint: str) -> str:
    """One bucket for the API tests (the worker creates it in production; no worker runs here)."""
    s3_client(api_s3_endpoint).create_bucket(Bucket="echo-api-tests")
    return "echo-api-tests"


@pytest.fixture(scope="session")
def api_env(api_redis_url: str, api_s3_endpoint: str, api_bucket: str) -> dict[str, str]:
    keys = ",".join(f"{name}:{token}" for name, token in API_KEYS.items())
    return {"ECHO_REDIS_URL": api_redis_url, "ECHO_S3_ENDPOINT_URL": api_s3_endpoint, "ECHO_S3_BUCKET": api_bucket,
            "ECHO_API_KEYS": keys, **S3_ENV, **LIMITS}


@pytest.fixture(scope="session")
def start_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ApiServer]]:
    """Start more API processes (e.g. with other settings); all are stopped at the end."""
    started: list[ApiServer] = []

    def start(env: dict[str, str], *, workers: int = 1) -> ApiServer:
        server = start_api_process(env, tmp_path_factory.mktemp("api") / "api.log", workers=workers)
        started.append(server)
        return server

    yield start
    for server in started:
        stop(server.proc)


@pytest.fixture(scope="session")
def api_server(start_api: Callable[..., ApiServer], api_env: dict[str, str]) -> ApiServer:
    """The shared API process: keys alice and bob, S3 on moto, small limits (see LIMITS)."""
    return start_api(api_env)


@pytest.fixture
def api(api_server: ApiServer, redis_client: redis.Redis) -> ApiServer:
    """The shared API on an emptied Redis."""
    return api_server
