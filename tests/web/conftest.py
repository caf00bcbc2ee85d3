"""The web page against the real stack, in a real browser.

- ``stack``: one per module (starting processes is the slow part): the API over real HTTP
  (``python -m api``, keys on), a rendering worker and an assembling worker (``python -m worker`` on
  the tiny checkpoint), the session's redis-server and moto S3 (tests/support/service_fixtures.py).
- ``browser``: headless Debian ``chromium`` through ``chromedriver`` (Selenium), both from the system
  packages (``make browser`` installs them). Their paths are given explicitly, so selenium-manager never
  looks for (or downloads) a browser or a driver.
- ``page``: the page freshly opened, its script started; at teardown, no Content-Security-Policy
  violation may have been logged (the page must work under its own policy).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from service_helpers import (
    PYTHON,
    ROOT,
    S3_CREDENTIALS,
    ApiProcess,
    WorkerProcess,
    free_port,
    heartbeat,
    process_env,
    wait_for,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "web-token-0001"
MAX_TEXT_CHARS = 300  # small, so a test can go over it


@dataclass
class Stack:
    api: ApiProcess
    workers: list[WorkerProcess]
    token: str
    max_text_chars: int

    def get(self, path: str) -> requests.Response:
        return requests.get(self.api.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)


def _start_worker(env: dict[str, str], log: Path) -> WorkerProcess:
    name = f"web-{uuid.uuid4().hex[:8]}@localhost"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "worker", "--hostname", name, "--loglevel", "INFO"],
            cwd=ROOT,
            env=process_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return WorkerProcess(proc, log, name, env["ECHO_REDIS_URL"])


def _start_api(env: dict[str, str], log: Path) -> ApiProcess:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "api", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=ROOT,
            env=process_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return ApiProcess(proc, f"http://127.0.0.1:{port}", log)


def _up(process: WorkerProcess | ApiProcess) -> Callable[[], bool]:
    def check() -> bool:
        if process.proc.poll() is not None:
            raise AssertionError(f"{process.proc.args} exited:\n{process.log.read_text(errors='replace')}")
        if isinstance(process, WorkerProcess):
            beat = heartbeat(process.redis_url, process.name)
            return beat is not None and beat.get("pid") == process.proc.pid
        try:
            return requests.get(process.url + "/healthz", timeout=5).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # still booting
            return False

    return check


@pytest.fixture(scope="module")
def stack(
    redis_server: str, s3_endpoint: str, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushall()
    env = {
        "ECHO_REDIS_URL": redis_server,
        "ECHO_S3_ENDPOINT_URL": s3_endpoint,
        "ECHO_S3_BUCKET": f"echo-web-{uuid.uuid4().hex[:10]}",
        **S3_CREDENTIALS,
        "ECHO_API_KEYS": f"web:{TOKEN}",
        "ECHO_MAX_TEXT_CHARS": str(MAX_TEXT_CHARS),
        "ECHO_MODEL_REPO": str(tiny_checkpoint / "echo-tts-base"),
        "ECHO_AE_REPO": str(tiny_checkpoint / "fish-s1-dac-min"),
        "ECHO_DEVICE": "cpu",
        "ECHO_DTYPE": "float32",
        "ECHO_AE_DTYPE": "float32",
    }
    logs = tmp_path_factory.mktemp("web-stack")
    # all three start at once: each spends its first seconds importing
    workers = [
        _start_worker(env, logs / "render.log"),
        _start_worker(env | {"ECHO_WORKER_ROLE": "assemble"}, logs / "assemble.log"),
    ]
    api = _start_api(env, logs / "api.log")
    try:
        for process in (api, *workers):
            wait_for(_up(process), timeout=120, what=f"{process.log.stem} to start", interval=0.1)
        yield Stack(api, workers, TOKEN, MAX_TEXT_CHARS)
    finally:  # all at once: a worker's warm shutdown takes seconds
        for process in (api, *workers):
            process.proc.terminate()
        for worker in workers:
            worker.stop()
        api.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium and chromium-driver are not installed (make browser installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1100,1300")
    options.add_argument("--autoplay-policy=no-user-gesture-required")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # belt and braces: selenium-manager must not reach out
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def page(stack: Stack, browser: Any) -> Iterator[Any]:
    """The page at ``/`` with its script started, and no saved key."""
    browser.get(stack.api.url + "/")
    browser.execute_script("localStorage.clear()")
    browser.refresh()
    wait_for(
        lambda: browser.execute_script("return document.body.dataset.ready === 'true'"),
        timeout=15,
        what="the page's script to start",
    )
    yield browser
    violations = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert violations == []
