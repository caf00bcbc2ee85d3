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

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from service_helpers import ApiProcess, WorkerProcess, spawn_api, spawn_worker, started, tiny_stack_env, wait_for

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


@pytest.fixture(scope="module")
def stack(
    redis_server: str, s3_endpoint: str, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    redis.Redis.from_url(redis_server).flushall()
    env = tiny_stack_env(redis_server, s3_endpoint, f"echo-web-{uuid.uuid4().hex[:10]}", tiny_checkpoint) | {
        "ECHO_API_KEYS": f"web:{TOKEN}",
        "ECHO_MAX_TEXT_CHARS": str(MAX_TEXT_CHARS),
    }
    logs = tmp_path_factory.mktemp("web-stack")
    # all three start at once: each spends its first seconds importing
    workers = [
        spawn_worker(env, logs / "render.log", f"web-{uuid.uuid4().hex[:8]}@localhost"),
        spawn_worker(
            env | {"ECHO_WORKER_ROLE": "assemble"}, logs / "assemble.log", f"web-{uuid.uuid4().hex[:8]}@localhost"
        ),
    ]
    api = spawn_api(env, logs / "api.log", workers=1)
    try:
        for process in (api, *workers):
            wait_for(lambda p=process: started(p), timeout=120, what=f"{process.log.stem} to start", interval=0.1)
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
