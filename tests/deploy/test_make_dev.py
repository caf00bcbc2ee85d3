"""`make dev`: Redis, one worker, one assembler and the API on this machine without Docker, with the local
directory as storage (no S3 endpoint), renders a job end to end on the tiny checkpoint."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from deploy_support import ROOT, free_port

pytestmark = pytest.mark.slow
FAST = {"overrides": {"num_steps": 2}}  # the wiring is under test, not the sampler: keep CPU renders short


def test_the_make_dev_targets_run_the_dev_runner() -> None:
    # Given the Makefile
    makefile = (ROOT / "Makefile").read_text()
    # When we read the dev targets' recipes
    dev = re.search(r"^dev:.*\n\t(.*)$", makefile, re.M)
    tiny = re.search(r"^dev-tiny:.*\n\t(.*)$", makefile, re.M)
    # Then both run scripts/dev.py with the project's virtualenv (dev-tiny on the tiny checkpoint)
    assert dev and dev.group(1) == "$(PY) scripts/dev.py $(DEV_ARGS)"
    assert tiny and tiny.group(1) == "$(PY) scripts/dev.py --tiny $(DEV_ARGS)"


def clean_environment() -> dict[str, str]:
    """This shell without any service setting, as on a fresh machine."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "AWS_", "HF_"))}


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_make_dev_renders_a_job_with_local_file_storage_and_stops_cleanly(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # Given the dev runner on free ports, the tiny checkpoint and no S3 endpoint
    api_port, redis_port = free_port(), free_port()
    log = (tmp_path / "dev.log").open("w")
    runner = subprocess.Popen(
        [
            sys.executable,
            "scripts/dev.py",
            "--tiny",
            "--tiny-dir",
            str(tiny_checkpoint),
            "--api-port",
            str(api_port),
            "--redis-port",
            str(redis_port),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        cwd=ROOT,
        env=clean_environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 120
        while not port_open(api_port):
            assert runner.poll() is None and time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.2)
        # When a job is submitted (auth off: no ECHO_API_KEYS) and polled until it finishes
        submitted = requests.post(
            f"{base}/v1/jobs", json={"text": "Hello without Docker.", "format": "wav", **FAST}, timeout=10
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 240
        while (job := requests.get(f"{base}/v1/jobs/{job_id}", timeout=10).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.5)
        # Then it succeeded, the API itself serves the audio, and the file is in the local storage directory
        assert job["status"] == "succeeded", f"{job}\n{(tmp_path / 'dev.log').read_text()[-3000:]}"
        assert job["result"]["url"].startswith(base)
        audio = requests.get(job["result"]["url"], timeout=10)
        assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
        stored = list((tmp_path / "state" / "storage").rglob("*.wav"))
        assert [p.read_bytes() for p in stored] == [audio.content]
        # And a book renders on the worker, is assembled by the assembler, and its M4B is served by the API
        book = requests.post(
            f"{base}/v1/audiobooks",
            json={"title": "Dev", "chapters": [{"title": "One", "text": "Hello from a book."}], **FAST},
            timeout=10,
        ).json()
        deadline = time.monotonic() + 240
        while (book := requests.get(f"{base}/v1/audiobooks/{book['id']}", timeout=10).json())["status"] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()[-3000:]
            time.sleep(0.5)
        assert book["status"] == "succeeded", f"{book}\n{(tmp_path / 'dev.log').read_text()[-3000:]}"
        m4b = requests.get(book["result"]["m4b_url"], timeout=10)
        assert book["result"]["m4b_url"].startswith(base) and m4b.status_code == 200 and m4b.content[4:8] == b"ftyp"
    finally:
        # And when the runner is stopped, it stops Redis, the worker and the API and exits 0
        runner.send_signal(signal.SIGTERM)
        code = runner.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "dev.log").read_text()[-3000:]
    assert not port_open(api_port) and not port_open(redis_port)
