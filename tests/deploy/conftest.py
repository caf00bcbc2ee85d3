"""Stand-ins for the stack's containers, all on loopback: a redis-server of our own, moto's S3
server (in place of MinIO, which cannot be installed here) and a tiny random checkpoint (in place
of the hub weights the worker image downloads)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import ROOT, free_port, stop, wait_for_port


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    workdir = tmp_path_factory.mktemp("deploy-redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def s3_port() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m echo_tts.testing make-checkpoint DIR --size tiny` (the documented layout)."""
    target = tmp_path_factory.mktemp("deploy-tiny")
    done = subprocess.run(
        [sys.executable, "-m", "echo_tts.testing", "make-checkpoint", str(target), "--size", "tiny"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return target
