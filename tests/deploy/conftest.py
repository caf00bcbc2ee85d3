"""Stand-ins for the stack's containers, all on loopback: the shared fixtures of ``tests/support/
service_fixtures.py`` (a redis-server of our own, moto's S3 server in place of MinIO, which cannot be
installed here, and a tiny random checkpoint in place of the hub weights the worker image downloads),
given here as the ports the compose file's hosts are rewritten to."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest


@pytest.fixture(scope="session")
def redis_port(redis_server: str) -> int:
    return int(urlsplit(redis_server).port or 6379)


@pytest.fixture(scope="session")
def s3_port(s3_endpoint: str) -> int:
    return int(urlsplit(s3_endpoint).port or 80)
