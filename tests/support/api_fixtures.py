"""Fixtures for the job store and API tests: the shared redis-server and moto S3 server of
``service_fixtures``, and the API over real HTTP (``python -m api --bind``). Registered for every test
folder by ``tests/conftest.py``; helpers are imported from ``api_helpers``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from api_helpers import (
    API_KEYS,
    LIMITS,
    S3_ENV,
    ApiServer,
    s3_client,
    start_api_process,
    stop,
)


@pytest.fixture(scope="session")
def api_redis_url(redis_server: str) -> str:
    """The session's redis-server (``redis_server`` from service_fixtures.py)."""
    return redis_server


@pytest.fixture
def redis_client(api_redis_url: str) -> Iterator[redis.Redis]:
    """A client on an emptied database."""
    client = redis.Redis.from_url(api_redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def api_s3_endpoint(s3_endpoint: str) -> str:
    """The session's moto S3 server on loopback (``s3_endpoint`` from service_fixtures.py)."""
    return s3_endpoint


@pytest.fixture(scope="session")
def api_bucket(api_s3_endpoint: str) -> str:
    """One bucket for the API tests (the worker creates it in production; no worker runs here)."""
    s3_client(api_s3_endpoint).create_bucket(Bucket="echo-api-tests")
    return "echo-api-tests"


@pytest.fixture(scope="session")
def api_env(api_redis_url: str, api_s3_endpoint: str, api_bucket: str) -> dict[str, str]:
    keys = ",".join(f"{name}:{token}" for name, token in API_KEYS.items())
    return {
        "ECHO_REDIS_URL": api_redis_url,
        "ECHO_S3_ENDPOINT_URL": api_s3_endpoint,
        "ECHO_S3_BUCKET": api_bucket,
        "ECHO_API_KEYS": keys,
        **S3_ENV,
        **LIMITS,
    }


@pytest.fixture(scope="session")
def launch_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ApiServer]]:
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
def api_server(launch_api: Callable[..., ApiServer], api_env: dict[str, str]) -> ApiServer:
    """The shared API process: keys alice and bob, S3 on moto, small limits (see LIMITS)."""
    return launch_api(api_env)


@pytest.fixture
def api(api_server: ApiServer, redis_client: redis.Redis) -> ApiServer:
    """The shared API on an emptied Redis."""
    return api_server
