"""Fixtures of the fault tests (the service fixtures come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_helpers import RedisServer


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own with the append-only file on, to kill and restart."""
    server = RedisServer(tmp_path / "redis-aof")
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()
